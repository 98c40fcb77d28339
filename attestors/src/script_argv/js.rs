//! node, deno, bun and the npx/bunx launchers: their option tables and which script (or package bin) runs.

use super::{Entry, Flags, Parsed, file, loads_code, looks_like_file, plain, unknown};

/// Options that run other code before the script (or load config that can).
const NODE_CODE_OPTS: &[&str] = &[
    "-r",
    "--require",
    "--import",
    "--loader",
    "--experimental-loader",
    "--env-file",
    "--env-file-if-exists",
    "--openssl-config",
    "--openssl-shared-config",
    "--snapshot-blob",
    "--build-snapshot",
    "--build-snapshot-config",
    "--experimental-config-file",
    "--experimental-default-config-file",
    "--experimental-sea-config",
];

/// Options that take a separate value (or `=value`).
const NODE_VALUE_OPTS: &[&str] = &[
    "-C",
    "--conditions",
    "--input-type",
    "--title",
    "--inspect-port",
    "--debug-port",
    "--redirect-warnings",
    "--icu-data-dir",
    "--diagnostic-dir",
    "--report-dir",
    "--report-directory",
    "--report-filename",
    "--report-signal",
    "--disable-warning",
    "--watch-path",
    "--dns-result-order",
    "--unhandled-rejections",
    "--max-http-header-size",
    "--stack-trace-limit",
    "--heapsnapshot-signal",
    "--heapsnapshot-near-heap-limit",
    "--secure-heap",
    "--secure-heap-min",
    "--tls-cipher-list",
    "--tls-keylog",
    "--trace-event-categories",
    "--trace-event-file-pattern",
    "--localstorage-file",
    "--experimental-default-type",
    "--cpu-prof-dir",
    "--cpu-prof-name",
    "--cpu-prof-interval",
    "--heap-prof-dir",
    "--heap-prof-name",
    "--heap-prof-interval",
    "--use-largepages",
    "--max-old-space-size",
    "--max-semi-space-size",
    "--stack-size",
    "--disable-proto",
    "--allow-fs-read",
    "--allow-fs-write",
];

/// Options without a value (some also accept `=value`).
const NODE_FLAGS: &[&str] = &[
    "--inspect",
    "--inspect-brk",
    "--inspect-wait",
    "--watch",
    "--watch-preserve-output",
    "--no-warnings",
    "--no-deprecation",
    "--trace-warnings",
    "--trace-deprecation",
    "--throw-deprecation",
    "--pending-deprecation",
    "--enable-source-maps",
    "--preserve-symlinks",
    "--preserve-symlinks-main",
    "--abort-on-uncaught-exception",
    "--expose-gc",
    "--trace-uncaught",
    "--trace-exit",
    "--trace-sigint",
    "--frozen-intrinsics",
    "--experimental-vm-modules",
    "--experimental-wasm-modules",
    "--experimental-strip-types",
    "--no-experimental-strip-types",
    "--experimental-transform-types",
    "--experimental-require-module",
    "--no-experimental-require-module",
    "--experimental-detect-module",
    "--no-experimental-detect-module",
    "--experimental-permission",
    "--permission",
    "--allow-child-process",
    "--allow-worker",
    "--allow-addons",
    "--allow-wasi",
    "--experimental-websocket",
    "--no-experimental-fetch",
    "--no-experimental-global-navigator",
    "--zero-fill-buffers",
    "--use-bundled-ca",
    "--use-openssl-ca",
    "--use-system-ca",
    "--report-on-fatalerror",
    "--report-uncaught-exception",
    "--report-on-signal",
    "--report-compact",
    "--cpu-prof",
    "--heap-prof",
    "--prof",
    "--insecure-http-parser",
    "--jitless",
    "--no-addons",
    "--no-global-search-paths",
    "--force-fips",
    "--enable-fips",
    "--tls-min-v1.0",
    "--tls-min-v1.1",
    "--tls-min-v1.2",
    "--tls-min-v1.3",
    "--tls-max-v1.2",
    "--tls-max-v1.3",
    "--experimental-sqlite",
    "--no-experimental-sqlite",
    "--experimental-shadow-realm",
    "--experimental-eventsource",
    "--experimental-print-required-tla",
    "--no-network-family-autoselection",
    "--trace-tls",
    "--trace-sync-io",
    "--verify-base-objects",
];

pub(super) fn node(args: &[String]) -> Parsed {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let (name, inline_value) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (a.as_str(), None),
        };
        match name {
            "--" => return plain(args.get(i + 1).map_or(Entry::None, |s| file(s))),
            "-" | "-e" | "--eval" | "-p" | "--print" | "-pe" | "-i" | "--interactive" | "--run" | "--test" | "-c"
            | "--check" | "-v" | "--version" | "-h" | "--help" | "--v8-options" | "--completion-bash" => {
                return plain(Entry::None);
            }
            opt if NODE_CODE_OPTS.contains(&opt) => return Err(loads_code("node", opt)),
            opt if NODE_VALUE_OPTS.contains(&opt) => i += if inline_value.is_some() { 1 } else { 2 },
            opt if NODE_FLAGS.contains(&opt) => i += 1,
            opt if opt.starts_with('-') => return Err(unknown("node", opt)),
            script => {
                let base = script.rsplit('/').next().unwrap_or(script);
                // npx is a node script; its entry is the package's bin, if installed locally.
                if matches!(base, "npx" | "npx-cli.js") {
                    return launcher_bin(&args[i + 1..], &["-p", "--package", "-c", "--call"])
                        .map(|e| (e, Flags::default()));
                }
                return plain(file(script));
            }
        }
    }
    plain(Entry::None)
}

const DENO_VALUE_OPTS: &[&str] = &["--lock", "--cert", "--location", "--seed", "-L", "--log-level", "--ext"];
/// Import maps and config files remap what the script's imports load; preloads run first.
const DENO_CODE_OPTS: &[&str] = &["-c", "--config", "--import-map", "--preload", "--env-file", "--env"];

pub(super) fn deno(args: &[String]) -> Result<Entry, String> {
    let mut i = 0;
    let mut subcommand_seen = false;
    while let Some(a) = args.get(i) {
        let name = a.split_once('=').map_or(a.as_str(), |(n, _)| n);
        match name {
            opt if DENO_CODE_OPTS.contains(&opt) => return Err(loads_code("deno", opt)),
            opt if DENO_VALUE_OPTS.contains(&opt) => i += if a.contains('=') { 1 } else { 2 },
            // deno's other options take their values with `=` only.
            opt if opt.starts_with('-') => i += 1,
            "run" | "serve" if !subcommand_seen => {
                subcommand_seen = true;
                i += 1;
            }
            // Any other subcommand (eval, repl, task, test, ...) runs no single script file.
            word if !subcommand_seen && !looks_like_file(word) => return Ok(Entry::None),
            script => return Ok(file(script)),
        }
    }
    Ok(Entry::None)
}

pub(super) const BUN_VALUE_OPTS: &[&str] = &["--cwd", "--tsconfig-override", "--main-fields", "--conditions"];
/// `--preload` runs first; a bunfig (`--config`) can list preloads; env files can set them.
const BUN_CODE_OPTS: &[&str] = &["-r", "--preload", "-c", "--config", "--env-file"];

pub(super) fn bun(args: &[String]) -> Result<Entry, String> {
    let mut i = 0;
    let mut base = None;
    let mut subcommand_seen = false;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--cwd" => {
                base = args.get(i + 1).cloned();
                i += 2;
            }
            opt if BUN_CODE_OPTS.contains(&opt.split_once('=').map_or(opt, |(n, _)| n)) => {
                return Err(loads_code("bun", opt));
            }
            opt if BUN_VALUE_OPTS.contains(&opt) => i += 2,
            opt if opt.starts_with('-') => i += 1,
            "x" if !subcommand_seen => return launcher_bin(&args[i + 1..], BUN_VALUE_OPTS),
            "run" if !subcommand_seen => {
                subcommand_seen = true;
                i += 1;
            }
            word if !subcommand_seen && !looks_like_file(word) => return Ok(Entry::None),
            script => return Ok(Entry::File { path: script.to_owned(), base }),
        }
    }
    Ok(Entry::None)
}

/// `npx NAME` / `bunx NAME`: the first positional names a package bin.
pub(super) fn launcher_bin(args: &[String], value_opts: &[&str]) -> Result<Entry, String> {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            opt if BUN_CODE_OPTS.contains(&opt) => return Err(loads_code("bunx", opt)),
            opt if value_opts.contains(&opt) => i += 2,
            opt if opt.starts_with('-') => i += 1,
            name => {
                // "pkg@1.2" or "@scope/pkg": the bin is named after the package.
                let bare = name.rsplit('/').next().unwrap_or(name);
                let bare = bare.split('@').next().unwrap_or(bare);
                return Ok(if bare.is_empty() { Entry::None } else { Entry::Bin(bare.to_owned()) });
            }
        }
    }
    Ok(Entry::None)
}
