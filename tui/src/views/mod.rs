//! The dashboard's views. Each resource view is one module (its model's [`Resource`] impl: columns,
//! cells, words, how it is listed and deleted) plus one line in [`registry!`] below, which makes
//! from those lines everything that must name every kind: [`Kind`], [`View`], [`Listing`],
//! [`Tables`] (one table per kind, reset together) and the worker's [`list`] dispatch.
//! `overview`, `detail` and `console` (the serial console pane) are the views that are not
//! resource tables.

pub mod actions;
pub mod aggregates;
pub mod assignments;
pub mod console;
pub mod detail;
pub mod events;
pub mod flavors;
pub mod hypervisors;
pub mod identity;
pub mod idprojects;
pub mod images;
pub mod interfaces;
pub mod keypairs;
pub mod networks;
pub mod overview;
pub mod ports;
pub mod secgroups;
pub mod secrules;
pub mod server_groups;
pub mod servers;
pub mod services;
pub mod snapshots;
pub mod subnets;
pub mod usage;
pub mod users;
pub mod volumes;

use meridian_common::{Client, ClientError};

use crate::table::{AnyTable, CellCtx, Resource, ResourceTable, Scope};
use crate::worker::DeleteCall;

macro_rules! registry {
    ($($kind:ident => $module:ident :: $ty:ident),* $(,)?) => {
        /// The resource lists the dashboard shows, in tab order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($kind),*
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),*];

            /// One of these, in words (`Delete image cirros?`).
            pub fn noun(self) -> &'static str {
                match self { $(Kind::$kind => <$module::$ty as Resource>::NOUN),* }
            }
            /// The view's tab label.
            pub fn tab(self) -> &'static str {
                match self { $(Kind::$kind => <$module::$ty as Resource>::TAB),* }
            }
            /// The palette command that opens the view.
            pub fn command(self) -> &'static str {
                match self { $(Kind::$kind => <$module::$ty as Resource>::COMMAND),* }
            }
            pub fn admin_only(self) -> bool {
                match self { $(Kind::$kind => <$module::$ty as Resource>::ADMIN_ONLY),* }
            }
            /// Whether the all-projects toggle applies.
            pub fn scoped(self) -> bool {
                match self { $(Kind::$kind => <$module::$ty as Resource>::SCOPED),* }
            }
            /// The call that deletes `id` of this kind (`None`: not deleted from here).
            pub fn delete_call(self, id: &str) -> Option<DeleteCall> {
                match self { $(Kind::$kind => <$module::$ty as Resource>::delete_call(id)),* }
            }
            /// The PATCH (path, body) that enables or disables `id` of this kind.
            pub fn enable_call(self, id: &str, on: bool) -> Option<(DeleteCall, serde_json::Value)> {
                match self { $(Kind::$kind => <$module::$ty as Resource>::enable_call(id, on)),* }
            }
            /// Whether the dashboard can delete one (hypervisors and services are not deleted here).
            pub fn deletable(self) -> bool {
                self.delete_call("x").is_some()
            }
        }

        /// A screen of the dashboard: the overview or one resource list.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum View {
            Overview,
            $($kind),*
        }

        impl View {
            pub const ALL: &'static [View] = &[View::Overview, $(View::$kind),*];

            pub fn kind(self) -> Option<Kind> {
                match self {
                    View::Overview => None,
                    $(View::$kind => Some(Kind::$kind)),*
                }
            }
            /// The view that lists a kind.
            pub fn of_kind(kind: Kind) -> View {
                match kind { $(Kind::$kind => View::$kind),* }
            }
        }

        /// A whole list read by the worker, typed by kind.
        #[derive(Clone, Debug)]
        pub enum Listing {
            $($kind(Vec<$module::$ty>)),*
        }

        impl Listing {
            pub fn kind(&self) -> Kind {
                match self { $(Listing::$kind(_) => Kind::$kind),* }
            }
        }

        /// One table per kind. Field names are the modules' names; a new project or cloud
        /// replaces the whole set (`Tables::default()`), so no table keeps another project's rows.
        #[derive(Default)]
        pub struct Tables {
            $(pub $module: ResourceTable<$module::$ty>),*
        }

        impl Tables {
            pub fn get(&self, kind: Kind) -> &dyn AnyTable {
                match kind { $(Kind::$kind => &self.$module),* }
            }
            pub fn get_mut(&mut self, kind: Kind) -> &mut dyn AnyTable {
                match kind { $(Kind::$kind => &mut self.$module),* }
            }
            /// Puts a listing in its table.
            pub fn set(&mut self, listing: Listing, ctx: &CellCtx) {
                match listing { $(Listing::$kind(v) => self.$module.set_items(v, ctx)),* }
            }
        }

        /// Reads a whole list (the worker's side of `Request::List`).
        pub async fn list(client: &Client, kind: Kind, scope: Scope) -> Result<Listing, ClientError> {
            Ok(match kind { $(Kind::$kind => Listing::$kind(<$module::$ty as Resource>::list(client, scope).await?)),* })
        }
    };
}

// The registration: one line per resource view, in tab order.
registry! {
    Servers => servers::Server,
    Flavors => flavors::Flavor,
    Images => images::Image,
    Networks => networks::Network,
    Subnets => subnets::Subnet,
    Ports => ports::Port,
    Keypairs => keypairs::Keypair,
    SecGroups => secgroups::SecGroup,
    SecRules => secrules::SecRule,
    Volumes => volumes::Volume,
    Snapshots => snapshots::Snapshot,
    Hypervisors => hypervisors::Hypervisor,
    Services => services::Service,
    IdProjects => idprojects::IdProject,
    Users => users::User,
    Assignments => assignments::Assignment,
    ServerGroups => server_groups::ServerGroup,
    Aggregates => aggregates::Aggregate,
}

impl View {
    pub fn title(self) -> &'static str {
        self.kind().map_or("Overview", Kind::tab)
    }
    /// The palette command (`:servers`).
    pub fn command(self) -> &'static str {
        self.kind().map_or("overview", Kind::command)
    }
    pub fn admin_only(self) -> bool {
        self.kind().is_some_and(Kind::admin_only)
    }
}
