//! The coordinator's side of hot loading: registering, replacing and removing a plugin's
//! types, the duplicate-type rule, and the `srvPlugins` listing. Loading and validating a file
//! happened before the event arrived, off this task; here only the routes change, between two
//! batches, so no request is lost or answered by a half-swapped jobber.

use super::message::PluginEvent;
use super::route::{lock, Jobber, PluginLane};
use super::Coordinator;
use crate::plugins::LoadedPlugin;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

impl Coordinator {
    pub(super) fn plugin_event(&mut self, event: PluginEvent) {
        match event {
            PluginEvent::Loaded(plugin) => self.register(plugin),
            PluginEvent::Removed(path) => self.unregister(&path),
            PluginEvent::Refused { path, error } => {
                self.clashing.remove(&path);
                self.refused.insert(path, error);
            }
        }
        self.retry_clashing();
    }

    /// Registers the clashing files whose types are free now (their rival was removed or
    /// replaced by a version without the type), in path order.
    fn retry_clashing(&mut self) {
        let free: Vec<_> = self
            .clashing
            .values()
            .filter(|plugin| self.clash(plugin).is_none())
            .map(|plugin| plugin.path.clone())
            .collect();
        for path in free {
            // An earlier file of this round may have taken a type; `register` checks again.
            if let Some(plugin) = self.clashing.remove(&path) {
                self.register(plugin);
            }
        }
    }

    fn register(&mut self, plugin: LoadedPlugin) {
        let file = plugin.path.display().to_string();
        if let Some(clash) = self.clash(&plugin) {
            tracing::error!(file, error = %clash, "plugin refused; what was serving keeps serving");
            self.refused.insert(plugin.path.clone(), clash);
            self.clashing.insert(plugin.path.clone(), plugin);
            return;
        }
        self.refused.remove(&plugin.path);
        self.clashing.remove(&plugin.path);
        let old = self.plugins.insert(plugin.path.clone(), plugin.clone());
        if let Some(old) = &old {
            for kind in old.types.iter().filter(|k| !plugin.types.contains(k)) {
                self.remove_route(kind);
            }
        }
        for (kind, kind_index) in plugin.types.iter().zip(0..) {
            let jobber = Jobber::Plugin(Arc::new(PluginLane::new(plugin.clone(), kind_index)));
            self.swap_or_add(kind, jobber);
        }
        let action = if old.is_some() {
            "plugin replaced"
        } else {
            "plugin loaded"
        };
        tracing::info!(
            file,
            kind = plugin.kind.as_str(),
            types = ?plugin.types,
            hash = %plugin.hash,
            load_ms = plugin.load_time.as_secs_f64() * 1e3,
            from_cache = plugin.from_cache,
            "{action}"
        );
    }

    /// A type of `plugin` that someone else serves, as an error naming both.
    fn clash(&self, plugin: &LoadedPlugin) -> Option<String> {
        plugin.types.iter().find_map(|kind| {
            let route = self.routes.get(kind.as_str())?;
            let owner = route.jobber.plugin_path();
            if owner == Some(plugin.path.as_path()) {
                return None;
            }
            let other = owner.map_or("the host itself (built-in or in-process)".to_owned(), |p| {
                p.display().to_string()
            });
            Some(format!(
                "plugin {} declares request type '{kind}', which {other} already serves",
                plugin.path.display()
            ))
        })
    }

    /// Serves `kind` with `jobber` from now on: a request already running finishes on the old
    /// jobber; the batch's requests not yet started go back to the lane for the new one.
    fn swap_or_add(&mut self, kind: &str, jobber: Jobber) {
        let Some(route) = self.routes.get_mut(kind) else {
            return self.add_route(Arc::from(kind), jobber);
        };
        route.jobber = jobber;
        let unstarted: Vec<_> = lock(&route.batch).drain(..).collect();
        route.lane.requeue_front(unstarted);
    }

    fn unregister(&mut self, path: &Path) {
        self.refused.remove(path);
        self.clashing.remove(path);
        let Some(plugin) = self.plugins.remove(path) else {
            return;
        };
        for kind in &plugin.types {
            self.remove_route(kind);
        }
        tracing::info!(file = %path.display(), types = ?plugin.types, "plugin removed");
    }

    /// `srvPlugins`: every loaded plugin file.
    pub(super) fn plugin_list(&self) -> Value {
        let plugins: Vec<Value> = self
            .plugins
            .values()
            .map(|plugin| {
                let loaded_at = plugin
                    .loaded_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as u64);
                json!({
                    "file": plugin.path.file_name().map(|n| n.to_string_lossy()),
                    "path": plugin.path.display().to_string(),
                    "kind": plugin.kind.as_str(),
                    "types": plugin.types,
                    "hash": plugin.hash,
                    "loadedAtMs": loaded_at,
                    "loadMs": plugin.load_time.as_secs_f64() * 1e3,
                    "fromCache": plugin.from_cache,
                })
            })
            .collect();
        let refused: Vec<Value> = self
            .refused
            .iter()
            .map(|(path, error)| {
                json!({
                    "file": path.file_name().map(|n| n.to_string_lossy()),
                    "path": path.display().to_string(),
                    "error": error,
                })
            })
            .collect();
        json!({ "plugins": plugins, "refused": refused })
    }
}
