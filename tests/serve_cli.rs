//! `courier serve --print-config`: what it prints is a config file that
//! `--config` reads back to the same settings, optional keys included.

use std::process::Command;

fn print_config(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["serve", "--print-config"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_printed_config_reads_back_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = print_config(&[]);
    // The optional metrics address is named, though unset.
    assert!(defaults.contains("# metrics_listen = "), "{defaults}");
    assert!(
        defaults.contains("frames_per_second_max = 10000"),
        "{defaults}"
    );
    assert!(defaults.contains("websocket = true"), "{defaults}");
    let file = dir.path().join("courier.toml");
    std::fs::write(&file, &defaults).unwrap();
    assert_eq!(
        print_config(&["--config", file.to_str().unwrap()]),
        defaults
    );

    let with_metrics = print_config(&["--metrics-listen", "127.0.0.1:9420"]);
    assert!(
        with_metrics.contains("\nmetrics_listen = \"127.0.0.1:9420\"\n"),
        "{with_metrics}"
    );
    assert!(!with_metrics.contains("# metrics_listen"));
    std::fs::write(&file, &with_metrics).unwrap();
    assert_eq!(
        print_config(&["--config", file.to_str().unwrap()]),
        with_metrics
    );
}
