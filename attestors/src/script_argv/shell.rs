//! sh, bash, dash, ksh and zsh: which argument is the script, and the options that run startup files first.

use super::{Entry, Flags, Lang, Parsed, file, loads_code, unknown};

pub(super) fn shell(lang: Lang, args: &[String]) -> Parsed {
    let mut fl = Flags::default();
    let name = if lang == Lang::Zsh { "zsh" } else { "shell" };
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--" | "-" => return Ok((args.get(i + 1).map_or(Entry::None, |s| file(s)), fl)),
            "--version" | "--help" | "--dump-strings" | "--dump-po-strings" => return Ok((Entry::None, fl)),
            // Startup files and debuggers run before the script.
            "--rcfile" | "--init-file" | "--login" | "--debugger" => return Err(loads_code(name, a)),
            "--norc" | "--noprofile" | "--posix" | "--noediting" | "--restricted" | "--verbose" | "--pretty-print" => {
                i += 1
            }
            long if long.starts_with("--") => return Err(unknown(name, long)),
            opt if opt.starts_with('-') || opt.starts_with('+') => {
                let on = opt.starts_with('-');
                let mut took_next = false;
                for ch in opt[1..].chars() {
                    match ch {
                        'c' | 's' | 'D' => return Ok((Entry::None, fl)), // command string, stdin, dump
                        // Interactive and login shells read startup files first.
                        'i' | 'l' => return Err(loads_code(name, &format!("-{ch}"))),
                        'o' | 'O' => {
                            // -o NAME / -O NAME (the next argument; a second one in the same
                            // cluster takes the one after).
                            let value = args.get(i + 1 + usize::from(took_next)).map(String::as_str);
                            if ch == 'o' && on && value == Some("xtrace") {
                                fl.xtrace = true;
                            }
                            if took_next {
                                return Err(unknown(name, opt));
                            }
                            took_next = true;
                        }
                        'x' if on => fl.xtrace = true,
                        'f' if on => fl.no_rcs = true,
                        'a' | 'b' | 'e' | 'f' | 'h' | 'k' | 'm' | 'n' | 'p' | 't' | 'u' | 'v' | 'x' | 'B' | 'C'
                        | 'E' | 'H' | 'P' | 'T' | 'r' | 'V' => {}
                        other => return Err(unknown(name, &format!("{}{other}", &opt[..1]))),
                    }
                }
                i += if took_next { 2 } else { 1 };
            }
            script => {
                if lang == Lang::Zsh && !fl.no_rcs {
                    return Err("zsh reads ~/.zshenv (or $ZDOTDIR/.zshenv) before any script, a file the \
                                workload's uid can write: no script selector (run it with `zsh -f` for one)"
                        .into());
                }
                return Ok((file(script), fl));
            }
        }
    }
    Ok((Entry::None, fl))
}
