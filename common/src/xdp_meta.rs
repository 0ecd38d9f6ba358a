//! What `uplink_xdp` tells `uplink_tc` about a frame, in the frame's XDP metadata: the bytes
//! an XDP program may put in front of a packet, which the kernel keeps when it builds the
//! skb (native and generic XDP alike) and never sends on a wire.

/// The 4 metadata bytes in front of a frame whose addresses `uplink_xdp` checked and passed:
/// the source is neither in a Weir network nor a host address, the destination is not on the
/// containers' side. `uplink_tc` then skips those lookups; without the marker (no XDP, or a
/// driver without metadata support) it makes them itself.
///
/// Only a BPF program can write metadata, on the device that receives the frame (or, for a
/// veth, one that redirects frames into its peer): root on this host, who could rewrite
/// Weir's maps as well. `uplink_xdp` writes the marker in front of any metadata already there.
pub const ADDRESSES_PASSED: u32 = u32::from_be_bytes(*b"WrAP");

/// Its length: XDP metadata grows in steps of 4 bytes.
pub const LEN: usize = 4;
