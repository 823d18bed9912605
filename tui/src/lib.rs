//! `meridian`, the terminal dashboard: an OpenStack client for any cloud (Keystone v3, Compute
//! v2.1, Image v2, Network v2.0) that uses Meridian's push stream and timeline where it finds them.
//!
//! The pieces: [`config`] (clouds.yaml, `OS_*`, settings, state), [`worker`] (the one owner of the
//! API client) and [`live`] (stream or polling), [`app`] (routing input and responses, drawing)
//! over the [`views`] (one module per view, one registry of resource kinds), the [`overlays`],
//! the generic [`table`], the [`login`] form and the launch [`wizard`].

pub mod app;
pub mod clipboard;
pub mod component;
pub mod config;
pub mod console_pane;
pub mod keymap;
pub mod keys;
pub mod live;
pub mod login;
pub mod model;
pub mod overlays;
pub mod ssh;
pub mod table;
pub mod theme;
pub mod transfer;
pub mod views;
pub mod wizard;
pub mod worker;
