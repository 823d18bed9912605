//! Neutron's tables: networks, subnets, ports and IP allocations.
