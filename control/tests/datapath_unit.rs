//! Every packet program (from_container, uplink_tc, uplink_xdp) run on crafted
//! frames with BPF_PROG_TEST_RUN: verdicts, output bytes (MACs, addresses, ports, TTL, every
//! checksum recomputed independently) and drop counters per reason. Each test loads its own
//! copy of the datapath (maps pinned in a private bpffs directory) in its own namespace.

mod datapath;
