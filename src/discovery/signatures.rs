//! What makes a process look like an agent: `[[discovery.signatures]]` and the built-in list
//! (docs/discovery.md), matched on the executable's name, the script's name and the command line.

use serde::Deserialize;

/// One signature: a process matches when every given field matches (at least one is given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Signature {
    pub name: String,
    /// The executable's file name (`node`) or full path (`/usr/bin/node`).
    pub exe: Option<String>,
    /// The script's file name (the first argument not starting with `-` after an interpreter).
    pub script: Option<String>,
    /// A substring of the command line (arguments joined by spaces).
    pub cmdline_contains: Option<String>,
}

/// What a process shows of itself.
pub(crate) struct Shown<'a> {
    pub exe: &'a str,
    pub script: Option<&'a str>,
    pub cmdline: &'a str,
}

impl Signature {
    pub(crate) fn matches(&self, p: &Shown<'_>) -> bool {
        if self.exe.is_none() && self.script.is_none() && self.cmdline_contains.is_none() {
            return false;
        }
        let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
        self.exe.as_deref().is_none_or(|e| if e.contains('/') { p.exe == e } else { base(p.exe) == e })
            && self.script.as_deref().is_none_or(|s| p.script.is_some_and(|x| x == s || base(x) == s))
            && self.cmdline_contains.as_deref().is_none_or(|c| p.cmdline.contains(c))
    }
}

/// Built-in signatures: agent SDKs imported or run from a command line, MCP server launchers,
/// agent CLIs. (A script that imports an SDK inside its file is found by a configured `script`
/// signature or by its keys, not here: discovery reads no file contents.)
pub(crate) fn builtin() -> Vec<Signature> {
    let cmd =
        |name: &str, c: &str| Signature { name: name.into(), cmdline_contains: Some(c.into()), ..Default::default() };
    let exe = |name: &str, e: &str| Signature { name: name.into(), exe: Some(e.into()), ..Default::default() };
    let mut v = Vec::new();
    for sdk in [
        "openai",
        "anthropic",
        "langchain",
        "langgraph",
        "crewai",
        "autogen",
        "llama_index",
        "mcp",
        "smolagents",
        "pydantic_ai",
    ] {
        v.push(Signature {
            name: format!("python {sdk}"),
            exe: None,
            script: None,
            cmdline_contains: Some(format!("import {sdk}")),
        });
        v.push(cmd(&format!("python -m {sdk}"), &format!("-m {sdk}")));
    }
    v.push(cmd("npx MCP server", "@modelcontextprotocol/"));
    v.push(cmd("uvx MCP server", "mcp-server-"));
    v.push(cmd("MCP server", "mcp-server"));
    v.push(cmd("MCP server (fastmcp)", "fastmcp"));
    for agent in ["claude", "codex", "aider", "gemini", "goose", "opencode", "crewai", "autogen"] {
        v.push(exe(&format!("{agent} CLI"), agent));
        v.push(Signature { name: format!("{agent} CLI"), script: Some(agent.into()), ..Default::default() });
    }
    v.push(cmd("Claude Code", "@anthropic-ai/claude-code"));
    v.push(cmd("Codex CLI", "@openai/codex"));
    v
}

/// Environment variable names that look like keys: `*_API_KEY`, `*_APIKEY`, `*_TOKEN`,
/// `*_SECRET`, `*_SECRET_KEY`, `*_ACCESS_KEY*`, `*_PASSWORD`.
pub(crate) fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["_API_KEY", "_APIKEY", "_TOKEN", "_SECRET", "_SECRET_KEY", "_PASSWORD", "_ACCESS_KEY"]
        .iter()
        .any(|s| n.ends_with(s))
        || n.contains("_ACCESS_KEY_ID")
        || n == "API_KEY"
        || n == "TOKEN"
}

/// Values with well-known key prefixes (OpenAI, Anthropic, GitHub, Slack, AWS, Google, Hugging
/// Face, GitLab, Stripe).
pub(crate) fn secret_value(value: &[u8]) -> bool {
    const PREFIXES: &[&[u8]] = &[
        b"sk-",
        b"sk-ant-",
        b"sk-proj-",
        b"ghp_",
        b"gho_",
        b"ghs_",
        b"ghu_",
        b"github_pat_",
        b"xoxb-",
        b"xoxp-",
        b"xoxa-",
        b"AKIA",
        b"ASIA",
        b"AIza",
        b"hf_",
        b"glpat-",
        b"sk_live_",
        b"rk_live_",
    ];
    value.len() >= 12 && PREFIXES.iter().any(|p| value.starts_with(p))
}
