//! Weir's datapath. Entry points are thin; each concern lives in its own module.
#![no_std]
#![no_main]

mod arp;
mod conntrack;
mod context;
mod deliver;
mod from_container;
mod icmp;
mod maps;
mod metrics;
mod nat;
mod packet;
mod policy;
mod publish;
mod sock;
mod to_container;
mod uplink;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
