//! The scripts a newcomer runs first: `make run` and `make lab` find the
//! binaries where cargo put them, whatever `CARGO_TARGET_DIR` says.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn stdout(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh directory standing for a user's own target directory.
fn target_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("it-target-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("release")).unwrap();
    dir
}

#[test]
fn the_target_directory_is_cargos() {
    let custom = target_dir();
    let printed = stdout(
        Command::new("bash")
            .arg("docker/target-dir.sh")
            .current_dir(root())
            .env("CARGO_TARGET_DIR", &custom),
    );
    assert_eq!(printed.trim(), custom.to_str().unwrap());
    let default = stdout(
        Command::new("bash")
            .arg("docker/target-dir.sh")
            .current_dir(root())
            .env_remove("CARGO_TARGET_DIR"),
    );
    assert_eq!(default.trim(), root().join("target").to_str().unwrap());
    std::fs::remove_dir_all(custom).unwrap();
}

#[test]
fn make_run_and_make_lab_use_the_binaries_in_cargo_target_dir() {
    let custom = target_dir();
    let dir = custom.to_str().unwrap();
    for (target, expected) in [
        (
            "run",
            format!("APP_BIN=\"{dir}/release/app\" bash docker/run.sh"),
        ),
        ("lab", format!("\"{dir}/release/lab\"")),
    ] {
        let plan = stdout(
            Command::new("make")
                .args(["-n", target])
                .current_dir(root())
                .env("CARGO_TARGET_DIR", &custom),
        );
        assert!(plan.contains(&expected), "make -n {target}:\n{plan}");
        assert!(
            !plan.contains("./target/release"),
            "make -n {target}:\n{plan}"
        );
    }
    std::fs::remove_dir_all(custom).unwrap();
}

#[test]
fn run_sh_runs_the_app_of_cargo_target_dir() {
    let custom = target_dir();
    let calls = custom.join("calls");
    let fake = custom.join("release/app");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", calls.display()),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    stdout(
        Command::new("bash")
            .arg("docker/run.sh")
            .current_dir(root())
            .env_remove("APP_BIN")
            .env("CARGO_TARGET_DIR", &custom),
    );
    let ran = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(ran, "migrate\nseed\nserve --banner\n");

    // no binary there: a message naming where it looked, and how to build
    std::fs::remove_file(&fake).unwrap();
    let out = Command::new("bash")
        .arg("docker/run.sh")
        .current_dir(root())
        .env_remove("APP_BIN")
        .env("CARGO_TARGET_DIR", &custom)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains(fake.to_str().unwrap()), "{message}");
    assert!(message.contains("cargo build --release"), "{message}");
    std::fs::remove_dir_all(custom).unwrap();
}
