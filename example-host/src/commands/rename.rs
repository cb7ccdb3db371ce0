//! `fusion-host rename PATTERN --to TEMPLATE`: a naming schema, expanded to
//! the `rename_batch` pair list, shown as a table, applied with `--apply`.
//!
//! Template tokens (see docs/TOOLS.md):
//! `{name}` the file name, `{stem}` the name without its last extension,
//! `{ext}` that extension (no dot), `{parent}` the folder's name, `{n}` a
//! counter (`{n:03}` zero-padded to 3, `{n:03:5}` starting at 5), `{mtime}`
//! the modification date (`{mtime:%Y-%m-%d_%H%M}`: any strftime format, local
//! time), `{1}`… the groups of `--match`, `{{` and `}}` literal braces.

use std::time::SystemTime;

use anyhow::{Context as _, anyhow, bail};
use chrono::format::{Item, StrftimeItems};
use fusion_tools::{
    BatchProblem, Context, Error as ToolError, Mode, Outcome, RenameBatchInput, RenamePair, Toolbox,
};
use regex::Regex;
use serde_json::json;

use crate::cli::{Global, Order};
use crate::fail::{Fail, exit};

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Name,
    Stem,
    Ext,
    Parent,
    Counter { width: usize, start: u64 },
    Mtime(String),
    Group(usize),
}

/// A parsed `--to` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

/// What a template is filled from.
#[derive(Debug, Clone)]
pub(crate) struct Facts<'a> {
    /// The path relative to the allowed folder, `/`-separated.
    pub(crate) rel: &'a str,
    pub(crate) modified: Option<SystemTime>,
    pub(crate) groups: Vec<String>,
}

impl Template {
    pub(crate) fn parse(text: &str) -> anyhow::Result<Template> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                bail!(
                    "--to: a lone `}}` at byte {}; write `}}}}` for a literal brace",
                    text.len() - tail.len()
                );
            }
            let end = tail.find('}').ok_or_else(|| {
                anyhow!("--to: `{tail}` has no closing `}}`; write `{{{{` for a literal brace")
            })?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(token(&tail[1..end])?);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if !parts.iter().any(|p| !matches!(p, Part::Text(_))) {
            bail!(
                "--to `{text}` has no token, so every file would get the same name; use {{stem}}, {{n}}, …"
            );
        }
        Ok(Template { parts })
    }

    /// The highest `--match` group the template uses.
    fn max_group(&self) -> usize {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Group(g) => Some(*g),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The new name for the `index`-th file (0-based).
    pub(crate) fn render(&self, facts: &Facts<'_>, index: u64) -> String {
        let name = facts.rel.rsplit('/').next().unwrap_or(facts.rel);
        let (stem, ext) = match name.rfind('.') {
            Some(dot) if dot > 0 => (&name[..dot], &name[dot + 1..]),
            _ => (name, ""),
        };
        let parent = facts.rel.rsplit('/').nth(1).unwrap_or("");
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Name => out.push_str(name),
                Part::Stem => out.push_str(stem),
                Part::Ext => out.push_str(ext),
                Part::Parent => out.push_str(parent),
                Part::Counter { width, start } => out.push_str(&format!("{:0width$}", start + index)),
                Part::Mtime(format) => {
                    if let Some(t) = facts.modified {
                        let local: chrono::DateTime<chrono::Local> = t.into();
                        out.push_str(&local.format(format).to_string());
                    }
                }
                Part::Group(g) => out.push_str(facts.groups.get(*g - 1).map_or("", String::as_str)),
            }
        }
        out
    }
}

fn token(inner: &str) -> anyhow::Result<Part> {
    let (name, arg) = match inner.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (inner, None),
    };
    let no_arg = |part: Part| match arg {
        None => Ok(part),
        Some(_) => Err(anyhow!("--to: `{{{inner}}}` takes no `:` argument")),
    };
    match name {
        "name" => no_arg(Part::Name),
        "stem" => no_arg(Part::Stem),
        "ext" => no_arg(Part::Ext),
        "parent" => no_arg(Part::Parent),
        "n" => {
            let (width, start) = match arg.map(|a| a.split_once(':').unwrap_or((a, ""))) {
                None => ("1", "1"),
                Some((w, s)) => (w, if s.is_empty() { "1" } else { s }),
            };
            let width: usize = width
                .parse()
                .ok()
                .filter(|w| (1..=12).contains(w))
                .ok_or_else(|| anyhow!("--to: `{{{inner}}}`: the width must be 1 to 12, like {{n:03}}"))?;
            let start: u64 = start.parse().map_err(|_| {
                anyhow!("--to: `{{{inner}}}`: the start must be a whole number, like {{n:03:100}}")
            })?;
            Ok(Part::Counter { width, start })
        }
        "mtime" => {
            let format = arg.unwrap_or("%Y-%m-%d").to_string();
            if StrftimeItems::new(&format).any(|item| matches!(item, Item::Error)) {
                bail!(
                    "--to: `{{{inner}}}`: `{format}` is not a strftime format (try %Y-%m-%d or %Y%m%d_%H%M)"
                );
            }
            if format.contains('/') {
                bail!("--to: `{{{inner}}}`: a date in a name cannot hold `/`; use - or _");
            }
            Ok(Part::Mtime(format))
        }
        digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            let group: usize = digits.parse().unwrap_or(0);
            if group == 0 {
                bail!("--to: `{{0}}` is the whole match; use {{name}}, or groups from {{1}}");
            }
            no_arg(Part::Group(group))
        }
        other => bail!(
            "--to: unknown token `{{{other}}}`; the tokens are {{name}} {{stem}} {{ext}} {{parent}} {{n}} {{n:03}} \
             {{mtime}} {{mtime:%Y-%m-%d}} and {{1}}… for --match groups"
        ),
    }
}

/// What `expand` found.
pub(crate) struct Expanded {
    pub(crate) input: RenameBatchInput,
    /// Files the pattern found that `--match` left out.
    pub(crate) not_matched: usize,
}

/// The files `pattern` matches (in the first allowed folder), renamed by `template`.
pub(crate) fn expand(
    toolbox: &Toolbox,
    cx: &Context<'_>,
    pattern: &str,
    template: &Template,
    matcher: Option<&Regex>,
    order: Order,
) -> anyhow::Result<Expanded> {
    if let Some(re) = matcher {
        if template.max_group() > re.captures_len() - 1 {
            bail!(
                "--to uses group {{{}}} but --match has {} group(s)",
                template.max_group(),
                re.captures_len() - 1
            );
        }
    } else if template.max_group() > 0 {
        bail!(
            "--to uses {{{}}}, a --match group, but there is no --match",
            template.max_group()
        );
    }
    let mut files: Vec<(String, Option<SystemTime>)> = Vec::new();
    let mut offset = 0;
    loop {
        let page = toolbox
            .call(
                cx,
                "glob",
                Mode::Run,
                json!({ "pattern": pattern, "kind": "file", "offset": offset }),
                None,
            )
            .map_err(|e| anyhow!("{pattern}: {e}"))?
            .into_value();
        let root = cx.scope().roots()[0].dir();
        for m in page["matches"].as_array().into_iter().flatten() {
            let rel = m["path"].as_str().unwrap_or_default().to_string();
            let modified = root
                .symlink_metadata(&rel)
                .ok()
                .and_then(|md| md.modified().ok())
                .map(|t| t.into_std());
            files.push((rel, modified));
        }
        match page["next_offset"].as_u64() {
            Some(next) if page["truncated"] == true => offset = next,
            _ => break,
        }
    }
    if order == Order::Mtime {
        files.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    }
    let mut renames = Vec::with_capacity(files.len());
    let mut not_matched = 0;
    for (rel, modified) in &files {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let groups = match matcher {
            None => Vec::new(),
            Some(re) => match re.captures(name) {
                Some(c) => c
                    .iter()
                    .skip(1)
                    .map(|g| g.map_or(String::new(), |g| g.as_str().to_string()))
                    .collect(),
                None => {
                    not_matched += 1;
                    continue;
                }
            },
        };
        let facts = Facts {
            rel,
            modified: *modified,
            groups,
        };
        let new_name = template.render(&facts, renames.len() as u64);
        let to = match rel.rfind('/') {
            Some(slash) => format!("{}/{new_name}", &rel[..slash]),
            None => new_name,
        };
        renames.push(RenamePair {
            from: rel.clone(),
            to,
        });
    }
    Ok(Expanded {
        input: RenameBatchInput { renames },
        not_matched,
    })
}

/// Options of `fusion-host rename`.
pub(crate) struct RenameArgs<'a> {
    pub(crate) pattern: &'a str,
    pub(crate) to: &'a str,
    pub(crate) matcher: Option<&'a str>,
    pub(crate) order: Order,
    pub(crate) roots: &'a [String],
    pub(crate) apply: bool,
    pub(crate) rows: usize,
}

fn usage(error: anyhow::Error) -> Fail {
    Fail {
        code: exit::USAGE,
        error,
    }
}

/// `fusion-host rename`.
pub(crate) fn rename(global: &Global, args: &RenameArgs<'_>) -> Result<(), Fail> {
    let template = Template::parse(args.to).map_err(usage)?;
    let matcher = args
        .matcher
        .map(Regex::new)
        .transpose()
        .context("--match is not a regular expression")
        .map_err(usage)?;
    let scope = crate::settings::local_scope(global, args.roots)?;
    let toolbox = crate::toolbox::toolbox();
    let cx = Context::new(&scope);
    let expanded = expand(
        &toolbox,
        &cx,
        args.pattern,
        &template,
        matcher.as_ref(),
        args.order,
    )
    .map_err(usage)?;
    let input = serde_json::to_value(&expanded.input)?;
    if expanded.input.renames.is_empty() {
        return Err(usage(anyhow!(
            "{} matches no file in {}{}",
            args.pattern,
            scope.roots()[0].path().display(),
            if expanded.not_matched > 0 {
                format!(" that --match accepts ({} left out)", expanded.not_matched)
            } else {
                String::new()
            }
        )));
    }
    let plan = match toolbox.call(&cx, "rename_batch", Mode::Plan, input.clone(), None) {
        Ok(Outcome::Plan(plan)) => plan,
        Ok(Outcome::Output(_)) => unreachable!("a mutate tool plans"),
        Err(e) => return Err(refused(global, &expanded, e)),
    };
    let shown = args.rows.min(expanded.input.renames.len());
    if global.json && !args.apply {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "renames": expanded.input.renames, "not_matched": expanded.not_matched, "plan": plan })
            )?
        );
        return Ok(());
    }
    if !global.json {
        print_pairs(&expanded.input.renames[..shown]);
        if shown < expanded.input.renames.len() {
            println!("  … and {} more", expanded.input.renames.len() - shown);
        }
        println!("{}", plan.summary);
        if expanded.not_matched > 0 {
            println!(
                "{} file(s) matched the pattern but not --match; they keep their names",
                expanded.not_matched
            );
        }
    }
    if !args.apply {
        println!("Nothing was changed. Run again with --apply to rename.");
        return Ok(());
    }
    match toolbox.call(&cx, "rename_batch", Mode::Apply, input, Some(&plan.precondition)) {
        Ok(out) => {
            let out = out.into_value();
            if global.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "✓ renamed {} entr{}",
                    out["renamed"],
                    if out["renamed"] == 1 { "y" } else { "ies" }
                );
            }
            Ok(())
        }
        Err(e) => {
            if global.json {
                println!("{}", serde_json::to_string_pretty(&e.to_body())?);
            }
            Err(Fail {
                code: 1,
                error: e.into(),
            })
        }
    }
}

fn print_pairs(pairs: &[RenamePair]) {
    let width = pairs.iter().map(|p| p.from.chars().count()).max().unwrap_or(0);
    for p in pairs {
        println!("  {:<width$}  →  {}", p.from, p.to);
    }
}

/// The plan's problems, as a table (or JSON), and the exit.
fn refused(global: &Global, expanded: &Expanded, e: ToolError) -> Fail {
    let problems: &[BatchProblem] = match &e {
        ToolError::InvalidBatch { problems } => problems,
        _ => &[],
    };
    if global.json {
        if let Ok(text) = serde_json::to_string_pretty(&e.to_body()) {
            println!("{text}");
        }
    } else if !problems.is_empty() {
        println!("{} problem(s); nothing was changed:", problems.len());
        let width = problems.iter().map(|p| p.code.as_str().len()).max().unwrap_or(0);
        for p in problems {
            let pair = p
                .index
                .and_then(|i| expanded.input.renames.get(i))
                .map(|r| format!("{} → {}: ", r.from, r.to))
                .unwrap_or_default();
            println!("  {:<width$}  {pair}{}", p.code.as_str(), p.message);
        }
        return Fail {
            code: 1,
            error: anyhow!("the batch has problems; change the pattern, --match or --to and try again"),
        };
    }
    Fail {
        code: 1,
        error: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(rel: &str) -> Facts<'_> {
        Facts {
            rel,
            modified: None,
            groups: vec!["north".into(), "7".into()],
        }
    }

    #[test]
    fn tokens_render() {
        let t = Template::parse("{parent}_{stem}_{n:03}.{ext}").unwrap();
        assert_eq!(
            t.render(&facts("site/scans/Scan_0001.e57"), 0),
            "scans_Scan_0001_001.e57"
        );
        assert_eq!(t.render(&facts("Scan.e57"), 41), "_Scan_042.e57");
        let t = Template::parse("{n:4:100}-{name}").unwrap();
        assert_eq!(t.render(&facts("a/b.tar.gz"), 2), "0102-b.tar.gz");
        let t = Template::parse("{{{1}}}_{2}.{ext}").unwrap();
        assert_eq!(t.render(&facts("x.las"), 0), "{north}_7.las");
        let t = Template::parse("{stem}{ext}").unwrap();
        assert_eq!(
            t.render(&facts(".hidden"), 0),
            ".hidden",
            "a leading dot is not an extension"
        );
        assert_eq!(t.render(&facts("README"), 0), "README");
    }

    #[test]
    fn mtime_uses_the_format() {
        let t = Template::parse("{mtime:%Y}_{mtime}").unwrap();
        let noon = chrono::NaiveDate::from_ymd_opt(2026, 11, 3)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_local_timezone(chrono::Local)
            .unwrap();
        let f = Facts {
            rel: "a.e57",
            modified: Some(noon.into()),
            groups: vec![],
        };
        assert_eq!(t.render(&f, 0), "2026_2026-11-03");
    }

    #[test]
    fn bad_templates_say_what_to_write() {
        for (bad, says) in [
            ("plain.e57", "no token"),
            ("{stem", "no closing"),
            ("a}b{n}", "lone"),
            ("{size}", "unknown token"),
            ("{n:0}", "width"),
            ("{n:03:x}", "start"),
            ("{stem:x}", "no `:` argument"),
            ("{mtime:%Q}", "strftime"),
            ("{mtime:%Y/%m}", "cannot hold `/`"),
            ("{0}", "whole match"),
        ] {
            let e = Template::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
