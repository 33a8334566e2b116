//! The private folders native plugins are copied to, across real hosts: a host killed with
//! SIGKILL cannot remove its folder, the next host's first native load does, and a running
//! host's folder is never touched.

mod support;

use std::path::{Path, PathBuf};
use support::{artifact, connect, until_answered, Served};

/// A host serving the native `counter` plugin from `dir/plugins`, in memory, with `tmp` as
/// its temporary folder; returned once the plugin answers.
async fn serve_native(dir: &Path, tmp: &Path) -> Served {
    let plugin = format!("counter.{}", std::env::consts::DLL_EXTENSION);
    let plugins = dir.join("plugins");
    std::fs::create_dir(&plugins).expect("plugins folder");
    std::fs::copy(artifact(&plugin), plugins.join(&plugin)).expect("copy the plugin");
    let plugins = plugins.to_string_lossy().into_owned();
    let args = ["--port", "0", "--plugins", &plugins, "--in-memory"];
    let served = Served::start_with(dir, &args, |command| {
        command.env("TMPDIR", tmp);
    });
    until_answered(&connect(&served).await, "cntResponse").await;
    served
}

/// The native plugin folders in `tmp`, sorted.
fn native_folders(tmp: &Path) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(tmp)
        .expect("the temporary folder reads")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with("resman-native-")
        })
        .collect();
    folders.sort();
    folders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_native_folder_is_removed_by_the_next_host_and_a_running_ones_is_kept() {
    let root = tempfile::tempdir().unwrap();
    let [tmp, killed_dir, running_dir, next_dir] =
        ["tmp", "killed", "running", "next"].map(|name| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            dir
        });

    let killed = serve_native(&killed_dir, &tmp).await;
    let [killed_folder] = native_folders(&tmp)
        .try_into()
        .expect("one folder per host");
    killed.kill();
    assert!(
        killed_folder.is_dir(),
        "a killed host cannot remove its folder"
    );

    let running = serve_native(&running_dir, &tmp).await;
    let [running_folder] = native_folders(&tmp)
        .try_into()
        .unwrap_or_else(|left: Vec<_>| {
            panic!("the killed host's folder is removed, the new one made: {left:?}")
        });
    assert_ne!(running_folder, killed_folder);

    let next = serve_native(&next_dir, &tmp).await;
    let folders = native_folders(&tmp);
    assert!(
        folders.contains(&running_folder),
        "a running host's folder is kept: {folders:?}"
    );
    assert_eq!(folders.len(), 2, "and one new folder is made: {folders:?}");

    for host in [running, next] {
        assert!(host.terminate().success());
    }
    assert_eq!(
        native_folders(&tmp),
        [] as [PathBuf; 0],
        "a host that stops removes its own"
    );
}
