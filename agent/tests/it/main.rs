//! Tests against a real libvirt `test:///default` connection (in-memory, per process), real
//! `qemu-img`, and a local HTTP server standing in for meridian-server's agent API.
//!
//! Every domain and network a test creates is removed by a guard's `Drop`, also when the test
//! fails.

mod agent;
mod controller;
mod firewall_feed;
mod fixtures;
mod hypervisor;
mod image_create;
mod rescue;
