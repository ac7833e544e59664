//! `state` and `list`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use anyhow::{bail, Result};

use super::Global;

pub fn state(g: &Global, id: &str) -> Result<()> {
    let c = g.root.load(id)?;
    let v = c.oci_state(c.status());
    // runc prints the indented JSON without a trailing newline.
    let mut out = std::io::stdout().lock();
    out.write_all(serde_json::to_string_pretty(&v)?.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|pw| {
            pw.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_owned())
            })
        })
        .unwrap_or_else(|| format!("#{uid}"))
}

/// Lays out rows like Go's tabwriter(minwidth 12, padding 3), as runc does.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(12)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

pub fn list(g: &Global, format: &str, quiet: bool) -> Result<()> {
    let mut items = Vec::new();
    for id in g.root.ids()? {
        let Ok(c) = g.root.load(&id) else { continue };
        let owner = std::fs::metadata(&c.dir)
            .map(|m| user_name(m.uid()))
            .unwrap_or_default();
        let mut v = c.oci_state(c.status());
        v.owner = owner;
        items.push(v);
    }
    let mut out = std::io::stdout().lock();
    if quiet {
        for v in &items {
            writeln!(out, "{}", v.id)?;
        }
        return Ok(());
    }
    match format {
        "json" => {
            if items.is_empty() {
                writeln!(out, "null")?;
            } else {
                writeln!(out, "{}", serde_json::to_string(&items)?)?;
            }
        }
        "table" => {
            let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
                .map(String::from)
                .to_vec()];
            for v in &items {
                rows.push(vec![
                    v.id.clone(),
                    v.pid.to_string(),
                    v.status.to_owned(),
                    v.bundle.display().to_string(),
                    v.created.clone(),
                    v.owner.clone(),
                ]);
            }
            out.write_all(table(&rows).as_bytes())?;
        }
        other => bail!("invalid format option {other:?}: use table or json"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_matches_runc_layout() {
        let rows = vec![
            ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
                .map(String::from)
                .to_vec(),
            [
                "t1",
                "8348",
                "running",
                "/tmp/rc/b",
                "2026-11-22T21:15:43.904302859Z",
                "root",
            ]
            .map(String::from)
            .to_vec(),
        ];
        assert_eq!(
            super::table(&rows),
            "ID          PID         STATUS      BUNDLE      CREATED                          OWNER\n\
             t1          8348        running     /tmp/rc/b   2026-11-22T21:15:43.904302859Z   root\n"
        );
    }
}
