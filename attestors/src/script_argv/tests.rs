//! Tests of the argv and environment rules, per interpreter, through `entry_of`.

use super::*;

fn argv(line: &str) -> Vec<String> {
    // `''` stands for an empty argument.
    line.split(' ').map(|a| if a == "''" { String::new() } else { a.to_owned() }).collect()
}

fn e(lang: Lang, line: &str) -> Entry {
    entry_of(lang, &argv(line), b"").unwrap_or_else(|why| panic!("{line}: {why}"))
}

/// The reason a command line (with `env`, `NAME=VALUE` separated by spaces) is refused.
fn refused(lang: Lang, line: &str, env: &str) -> String {
    let environ: Vec<u8> =
        env.split(' ').filter(|s| !s.is_empty()).flat_map(|s| [s.as_bytes(), b"\0"].concat()).collect();
    match entry_of(lang, &argv(line), &environ) {
        Err(why) => why,
        Ok(entry) => panic!("{line} with {env:?} was trusted: {entry:?}"),
    }
}

fn f(p: &str) -> Entry {
    file(p)
}

#[test]
fn interpreter_names() {
    let name = |x: &str| interpreter_of(x).map(|(_, n)| n);
    assert_eq!(name("python3.11").as_deref(), Some("python3"));
    assert_eq!(name("python3").as_deref(), Some("python3"));
    assert_eq!(name("python").as_deref(), Some("python"));
    assert_eq!(name("python2.7").as_deref(), Some("python2"));
    assert_eq!(name("ruby3.1").as_deref(), Some("ruby"));
    assert_eq!(name("perl5.36.0").as_deref(), Some("perl"));
    assert_eq!(name("nodejs").as_deref(), Some("node"));
    assert_eq!(name("dash").as_deref(), Some("dash"));
    assert_eq!(name("zsh").as_deref(), Some("zsh"));
    assert_eq!(name("pythonista"), None);
    assert_eq!(name("sleep"), None);
}

#[test]
fn python_forms() {
    assert_eq!(e(Lang::Python, "python3 agent.py --port 3"), f("agent.py"));
    assert_eq!(e(Lang::Python, "python3 -u -X dev agent.py"), f("agent.py"));
    assert_eq!(e(Lang::Python, "python3 -Xdev -W error -OO a.py"), f("a.py"));
    assert_eq!(e(Lang::Python, "python3 -m agent x"), Entry::Module("agent".into()));
    assert_eq!(e(Lang::Python, "python3 -um pkg.sub"), Entry::Module("pkg.sub".into()));
    assert_eq!(e(Lang::Python, "python3 -mpkg"), Entry::Module("pkg".into()));
    assert_eq!(e(Lang::Python, "python3 -c print(1) x.py"), Entry::None);
    assert_eq!(e(Lang::Python, "python3 -"), Entry::None);
    assert_eq!(e(Lang::Python, "python3"), Entry::None);
    assert_eq!(e(Lang::Python, "python3 -- -odd.py"), f("-odd.py"));
    assert_eq!(e(Lang::Python, "python3 -E -s -I a.py"), f("a.py"));
}

#[test]
fn empty_arguments_are_values_not_gaps() {
    // The spoofs: the empty string is the option's value, so evil.* is the script.
    assert_eq!(e(Lang::Python, "python3 -W '' evil.py legit.py"), f("evil.py"));
    assert_eq!(e(Lang::Python, "python3 -X '' evil.py legit.py"), f("evil.py"));
    assert_eq!(e(Lang::Node, "node --title '' evil.js legit.js"), f("evil.js"));
    assert_eq!(e(Lang::Node, "node --title= evil.js legit.js"), f("evil.js"));
    assert_eq!(e(Lang::Shell, "bash -o '' evil.sh legit.sh"), f("evil.sh"));
    assert_eq!(e(Lang::Ruby, "ruby -E '' evil.rb legit.rb"), f("evil.rb"));
    // An empty script name is the script position, not a gap: refused (it names no file).
    assert_eq!(refused(Lang::Python, "python3 '' legit.py", ""), "the script argument is empty");
}

#[test]
fn options_that_load_code_first_yield_no_script() {
    for (lang, line) in [
        (Lang::Python, "python3 -X pycache_prefix=/tmp/x legit.py"),
        (Lang::Python, "python3 -Xpresite=evil legit.py"),
        (Lang::Python, "python3 -W ignore::evil.Warn legit.py"),
        (Lang::Node, "node -r ./evil.js legit.js"),
        (Lang::Node, "node --require=./evil.js legit.js"),
        (Lang::Node, "node --import ./evil.mjs legit.js"),
        (Lang::Node, "node --loader ./evil.mjs legit.js"),
        (Lang::Node, "node --env-file .env legit.js"),
        (Lang::Node, "node --experimental-config-file c.json legit.js"),
        (Lang::Perl, "perl -S legit.pl"),
        (Lang::Perl, "perl -Mevil legit.pl"),
        (Lang::Perl, "perl -w -Ilib -M strict s.pl"),
        (Lang::Perl, "perl -d:Evil legit.pl"),
        (Lang::Ruby, "ruby -S legit.rb"),
        (Lang::Ruby, "ruby -revil legit.rb"),
        (Lang::Ruby, "ruby -w -I lib -rjson app.rb"),
        (Lang::Ruby, "ruby -C /tmp legit.rb"),
        (Lang::Shell, "bash -i legit.sh"),
        (Lang::Shell, "bash --login legit.sh"),
        (Lang::Shell, "bash --rcfile evil legit.sh"),
        (Lang::Zsh, "zsh legit.sh"),
        (Lang::Deno, "deno run --import-map evil.json main.ts"),
        (Lang::Deno, "deno run --config=deno.json main.ts"),
        (Lang::Bun, "bun --preload ./evil.ts index.ts"),
        (Lang::Uv, "uv run --with evil agent.py"),
    ] {
        let why = refused(lang, line, "");
        assert!(why.contains("no script selector"), "{line}: {why}");
    }
}

#[test]
fn unknown_options_fail_closed() {
    // Their arity decides which word is the script: `--new-opt legit.js evil.js`.
    for (lang, line) in [
        (Lang::Python, "python3 --new-opt legit.py evil.py"),
        (Lang::Python, "python3 -Z legit.py"),
        (Lang::Node, "node --new-opt legit.js evil.js"),
        (Lang::Perl, "perl -q legit.pl"),
        (Lang::Ruby, "ruby --new-opt legit.rb evil.rb"),
        (Lang::Shell, "bash --new-opt legit.sh"),
        (Lang::Shell, "sh -Q legit.sh"),
    ] {
        let why = refused(lang, line, "");
        assert!(why.contains("not known"), "{line}: {why}");
    }
}

#[test]
fn python_safe_path_with_dash_m_is_refused() {
    assert!(refused(Lang::Python, "python3 -P -m agent", "").contains("-P/-I"));
    assert!(refused(Lang::Python, "python3 -I -m agent", "").contains("-P/-I"));
    assert!(refused(Lang::Python, "python3 -m agent", "PYTHONSAFEPATH=1").contains("PYTHONSAFEPATH"));
    // A file script is unaffected by the safe path.
    assert_eq!(entry_of(Lang::Python, &argv("python3 -P a.py"), b"PYTHONSAFEPATH=1\0"), Ok(f("a.py")));
}

#[test]
fn preload_variables_yield_no_script() {
    for (lang, line, env) in [
        (Lang::Node, "node legit.js", "NODE_OPTIONS=--require=/tmp/evil.js"),
        (Lang::Node, "node legit.js", "NODE_PATH=/tmp/evil"),
        (Lang::Python, "python3 legit.py", "PYTHONPATH=/tmp/evil"),
        (Lang::Python, "python3 legit.py", "PYTHONSTARTUP=/tmp/evil.py"),
        (Lang::Python, "python3 legit.py", "PYTHONINSPECT=1"),
        (Lang::Python, "python3 legit.py", "PYTHONHOME=/tmp/evil"),
        (Lang::Python, "python3 legit.py", "PYTHONUSERBASE=/tmp/evil"),
        (Lang::Python, "python3 legit.py", "PYTHONWARNINGS=ignore::evil.W"),
        (Lang::Uv, "uv run legit.py", "PYTHONPATH=/tmp/evil"),
        (Lang::Perl, "perl legit.pl", "PERL5OPT=-Mevil"),
        (Lang::Perl, "perl legit.pl", "PERL5LIB=/tmp/evil"),
        (Lang::Ruby, "ruby legit.rb", "RUBYOPT=-revil"),
        (Lang::Ruby, "ruby legit.rb", "RUBYLIB=/tmp/evil"),
        (Lang::Shell, "bash legit.sh", "BASH_ENV=/tmp/evil.sh"),
        (Lang::Shell, "sh legit.sh", "ENV=/tmp/evil.sh"),
        (Lang::Shell, "bash legit.sh", "BASH_FUNC_ls%%=()_{_evil;_}"),
        (Lang::Shell, "bash legit.sh", "SHELLOPTS=xtrace"),
        (Lang::Shell, "bash -x legit.sh", "PS4=$(evil)"),
        (Lang::Bun, "bun index.ts", "BUN_OPTIONS=--preload=evil.ts"),
        // The dynamic loader, for every interpreter.
        (Lang::Python, "python3 legit.py", "LD_PRELOAD=/tmp/evil.so"),
        (Lang::Node, "node legit.js", "LD_LIBRARY_PATH=/tmp/evil"),
        (Lang::Shell, "bash legit.sh", "LD_AUDIT=/tmp/evil.so"),
    ] {
        let why = refused(lang, line, env);
        let name = env.split('=').next().unwrap();
        assert!(why.contains(name), "{line} {env}: {why}");
        assert!(!why.contains(env.split_once('=').unwrap().1), "values are never quoted: {why}");
    }
}

#[test]
fn harmless_environments_and_flags_keep_the_script() {
    let env = b"PATH=/usr/bin\0HOME=/root\0LD_PRELOAD=\0PS4=+ \0NODE_ENV=production\0";
    assert_eq!(entry_of(Lang::Node, &argv("node legit.js"), env), Ok(f("legit.js")));
    assert_eq!(entry_of(Lang::Shell, &argv("bash legit.sh"), env), Ok(f("legit.sh")));
    // -E / -I: python ignores PYTHON* variables (but not the loader's).
    assert_eq!(entry_of(Lang::Python, &argv("python3 -E legit.py"), b"PYTHONPATH=/x\0"), Ok(f("legit.py")));
    assert!(entry_of(Lang::Python, &argv("python3 -I legit.py"), b"LD_PRELOAD=/x.so\0").is_err());
    // No script at all: nothing to refuse.
    assert_eq!(entry_of(Lang::Node, &argv("node -e 1"), b"NODE_OPTIONS=-r x\0"), Ok(Entry::None));
    assert_eq!(e(Lang::Zsh, "zsh -f legit.sh"), f("legit.sh"));
}

#[test]
fn node_deno_bun_forms() {
    assert_eq!(e(Lang::Node, "node --inspect x.js"), f("x.js"));
    assert_eq!(e(Lang::Node, "node --max-old-space-size=99 --title t app.mjs"), f("app.mjs"));
    assert_eq!(e(Lang::Node, "node -e 1"), Entry::None);
    assert_eq!(e(Lang::Node, "node /usr/bin/npx cowsay hi"), Entry::Bin("cowsay".into()));
    assert_eq!(e(Lang::Node, "node /usr/bin/npx @scope/tool@2"), Entry::Bin("tool".into()));
    assert_eq!(e(Lang::Deno, "deno run --allow-net --lock deno.lock main.ts"), f("main.ts"));
    assert_eq!(e(Lang::Deno, "deno main.ts"), f("main.ts"));
    assert_eq!(e(Lang::Deno, "deno task dev"), Entry::None);
    assert_eq!(e(Lang::Bun, "bun run index.ts"), f("index.ts"));
    assert_eq!(
        e(Lang::Bun, "bun --cwd sub index.ts"),
        Entry::File { path: "index.ts".into(), base: Some("sub".into()) }
    );
    assert_eq!(e(Lang::Bun, "bun install"), Entry::None);
    assert_eq!(e(Lang::Bun, "bun x tool"), Entry::Bin("tool".into()));
    assert_eq!(e(Lang::Bun, "/usr/local/bin/bunx tool"), Entry::Bin("tool".into()));
}

#[test]
fn ruby_perl_shell_uv_forms() {
    assert_eq!(e(Lang::Ruby, "ruby -w --disable-gems -Eutf-8 app.rb"), f("app.rb"));
    assert_eq!(e(Lang::Ruby, "ruby --enable frozen-string-literal app.rb"), f("app.rb"));
    assert_eq!(e(Lang::Ruby, "ruby -e 1"), Entry::None);
    assert_eq!(e(Lang::Perl, "perl -w -T -l s.pl"), f("s.pl"));
    assert_eq!(e(Lang::Perl, "perl -ne print"), Entry::None);
    assert_eq!(e(Lang::Shell, "bash -e -o pipefail run.sh a"), f("run.sh"));
    assert_eq!(e(Lang::Shell, "bash -eo pipefail run.sh a"), f("run.sh"));
    assert_eq!(e(Lang::Shell, "sh -c echo"), Entry::None);
    assert_eq!(e(Lang::Shell, "-bash"), Entry::None);
    assert_eq!(e(Lang::Uv, "uv run --python 3.12 agent.py"), f("agent.py"));
    assert_eq!(
        e(Lang::Uv, "uv --directory /opt/a run main.py"),
        Entry::File { path: "main.py".into(), base: Some("/opt/a".into()) }
    );
    assert_eq!(e(Lang::Uv, "uv run python -u x.py"), f("x.py"));
    assert_eq!(e(Lang::Uv, "uv run -m agent"), Entry::Module("agent".into()));
    assert_eq!(e(Lang::Uv, "uv run pytest"), Entry::None);
    assert_eq!(e(Lang::Uv, "uv sync"), Entry::None);
}

#[test]
fn fuzz_entry_point_never_panics_on_odd_input() {
    for line in ["-", "--", "-X", "-W", "-m", "-o", "--title", "-\u{e9}\u{301}x", "--=", "-=", ""] {
        for exe in ["python3", "node", "perl", "ruby", "bash", "zsh", "deno", "bun", "uv", "sleep"] {
            let argv = vec![exe.to_owned(), line.to_owned()];
            let _ = script_of_argv(exe, &argv, b"\0=\0A\0==\0\xff=\xff\0");
        }
    }
    assert_eq!(script_of_argv("sleep", &argv("sleep 1"), b""), None);
    assert_eq!(script_of_argv("python3.12", &argv("python3 a.py"), b"").map(|(n, _)| n).as_deref(), Some("python3"));
}

/// Found by fuzzing (fuzz/regressions/script_argv): an empty argv element in the script position
/// named "" as the script, which resolves to the cwd. No script selector then.
#[test]
fn an_empty_script_argument_is_refused() {
    let argv = ["python3".to_owned(), String::new()];
    let (_, entry) = crate::script_of_argv("python3", &argv, b"").unwrap();
    assert!(entry.is_err(), "{entry:?}");
}
