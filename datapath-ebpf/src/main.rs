//! Weir's datapath. Entry points are thin; each concern lives in its own module.
#![no_std]
#![no_main]

mod arp;
mod conntrack;
mod context;
mod deliver;
mod family;
mod from_container;
mod from_container6;
mod icmp;
mod icmp6;
mod maps;
mod metrics;
mod nat;
mod nat6;
mod ndp;
mod packet;
mod packet6;
mod policy;
mod publish;
mod sock;
mod to_container;
mod uplink;
mod uplink6;
mod verdict;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
