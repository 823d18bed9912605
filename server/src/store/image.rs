//! Glance's tables: images and members.
