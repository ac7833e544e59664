//! See the parent module for how these run.

use super::*;

// ---------------------------------------------------------------------------
// 4. Image archives.

/// A blob of an archive case: a JSON document whose `@BLOBn`, `@SIZEn`,
/// `@HEXn` and `@DIFFn` strings are filled in with the digest, size, hex and
/// diff id of blob n (those before it), or a layer, or bytes.
#[derive(Debug, Clone)]
pub(super) enum BlobSpec {
    Json(Value),
    Layer(LayerCase),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub(super) struct ArEntry {
    pub(super) name: String,
    pub(super) kind: u8,
    pub(super) link: String,
    pub(super) content: ArContent,
}

#[derive(Debug, Clone)]
pub(super) enum ArContent {
    Blob(usize),
    Json(Value),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub(super) struct ArchiveCase {
    pub(super) blobs: Vec<BlobSpec>,
    pub(super) oci_layout: Option<Value>,
    pub(super) index: Option<Value>,
    pub(super) docker: Option<Value>,
    /// Write every blob as `blobs/sha256/<hex>` (and JSON ones as
    /// `<hex>.json`, layers as `l<n>/layer.tar` links too).
    pub(super) all_blobs: bool,
    pub(super) extra: Vec<ArEntry>,
    pub(super) truncate: Option<Index>,
    pub(super) unpack: bool,
    pub(super) native: bool,
}

pub(super) struct Built {
    pub(super) bytes: Vec<u8>,
    pub(super) digest: Digest,
    pub(super) diff: Digest,
}

pub(super) fn missing(n: usize) -> Digest {
    Digest::of(format!("missing-{n}").as_bytes())
}

/// `s` with its placeholders filled in from `built`.
pub(super) fn fill_str(s: &str, built: &[Built]) -> Value {
    if let Some(n) = s
        .strip_prefix("@SIZE")
        .and_then(|n| n.parse::<usize>().ok())
    {
        return json!(built.get(n).map_or(1234, |b| b.bytes.len()));
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('@') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let tok = ["@BLOB", "@HEX", "@DIFF"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        let Some(tok) = tok else {
            out.push('@');
            rest = &rest[1..];
            continue;
        };
        let digits = rest[tok.len()..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let Ok(n) = rest[tok.len()..tok.len() + digits].parse::<usize>() else {
            out.push_str(tok);
            rest = &rest[tok.len()..];
            continue;
        };
        let (digest, diff) = built.get(n).map_or((missing(n), missing(n)), |b| {
            (b.digest.clone(), b.diff.clone())
        });
        match tok {
            "@BLOB" => out.push_str(&digest.to_string()),
            "@HEX" => out.push_str(digest.hex()),
            _ => out.push_str(&diff.to_string()),
        }
        rest = &rest[tok.len() + digits..];
    }
    out.push_str(rest);
    Value::String(out)
}

pub(super) fn fill(v: &Value, built: &[Built]) -> Value {
    match v {
        Value::String(s) => fill_str(s, built),
        Value::Array(a) => Value::Array(a.iter().map(|v| fill(v, built)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), fill(v, built))).collect())
        }
        v => v.clone(),
    }
}

pub(super) fn name_of(s: &str, built: &[Built]) -> String {
    match fill_str(s, built) {
        Value::String(s) => s,
        v => v.to_string(),
    }
}

pub(super) fn blob_ref(n: usize, types: &[&'static str]) -> BoxedStrategy<Value> {
    desc_value(
        types,
        prop_oneof![
            12 => Just(json!(format!("@BLOB{n}"))),
            1 => digest_string().prop_map(Value::from),
        ]
        .boxed(),
        prop_oneof![
            12 => Just(json!(format!("@SIZE{n}"))),
            1 => (0u64..2000).prop_map(Value::from),
        ]
        .boxed(),
    )
}

pub(super) fn any_blob_ref() -> BoxedStrategy<Value> {
    (0usize..6)
        .prop_flat_map(|n| blob_ref(n, MANIFEST_TYPES))
        .boxed()
}

/// A simple layer (mostly one that applies) for the archive cases.
pub(super) fn archive_layer() -> BoxedStrategy<LayerCase> {
    prop_oneof![
        3 => (prop::collection::vec(any::<u8>(), 0..32), any::<bool>()).prop_map(|(d, gzip)| LayerCase {
            entries: vec![RawEntry {
                path: "etc/file".into(),
                kind: b'0',
                data: d,
                link: String::new(),
                mode: 0o644,
                uid: 0,
                pax: Vec::new(),
            }],
            remove_whiteouts: false,
            gzip,
            truncate: None,
        }),
        1 => layer_case(),
    ]
    .boxed()
}

pub(super) fn docker_manifest() -> BoxedStrategy<Value> {
    prop::collection::vec(
        obj(vec![
            (
                "Config",
                field(pick(&[
                    "@HEX1.json",
                    "blobs/sha256/@HEX1",
                    "./@HEX1.json",
                    "../x.json",
                    "/etc/passwd",
                    "missing.json",
                    "@HEX0.json",
                ])),
            ),
            (
                "RepoTags",
                opt_field(
                    prop::collection::vec(
                        prop_oneof![
                            reference_grammar().prop_map(|g| Value::from(g.text)),
                            dense_string().prop_map(Value::from),
                        ],
                        0..3,
                    )
                    .prop_map(Value::Array),
                ),
            ),
            (
                "Layers",
                field(
                    prop::collection::vec(
                        pick(&[
                            "blobs/sha256/@HEX0",
                            "l0/layer.tar",
                            "l2/layer.tar",
                            "@HEX0.json",
                            "../../x",
                            "/abs",
                        ]),
                        0..3,
                    )
                    .prop_map(Value::Array),
                ),
            ),
        ]),
        0..3,
    )
    .prop_map(Value::Array)
    .boxed()
}

pub(super) fn ar_entry() -> BoxedStrategy<ArEntry> {
    (
        prop_oneof![
            12 => prop::sample::select(vec![
                "index.json",
                "oci-layout",
                "manifest.json",
                "repositories",
                "blobs/sha256/@HEX0",
                "blobs/sha256/@HEX1",
                "blobs/sha256/@HEX2",
                "blobs/sha256/@HEX3",
                "@HEX1.json",
                "l0/layer.tar",
                "blobs/",
                "./index.json",
                "blobs//sha256/@HEX2",
                "",
            ]),
            1 => prop::sample::select(vec!["../x", "/abs", "a/../b", "index.json/.."]),
        ],
        prop_oneof![
            6 => Just((b'0', "")),
            1 => Just((b'5', "")),
            2 => prop::sample::select(vec![
                "index.json",
                "../blobs/sha256/@HEX0",
                "../../x",
                "/etc/passwd",
                "l0/layer.tar",
                "blobs/sha256/@HEX2",
                ".",
                "",
            ])
            .prop_flat_map(|t| prop::sample::select(vec![(b'2', t), (b'1', t)])),
            1 => prop::sample::select(vec![b'S', b'L', b'x', b'7', b'3']).prop_map(|k| (k, "")),
        ],
        prop_oneof![
            3 => (0usize..6).prop_map(ArContent::Blob),
            2 => prop_oneof![json_value(), mutated(shaped_doc(), 1)].prop_map(ArContent::Json),
            1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(ArContent::Bytes),
        ],
    )
        .prop_map(|(name, (kind, link), content)| ArEntry {
            name: name.to_owned(),
            kind,
            link: link.to_owned(),
            content,
        })
        .boxed()
}

/// An image laid out as an archive holds it: layer, config, manifest,
/// index, each field perturbed now and then.
pub(super) fn structured_blobs() -> BoxedStrategy<Vec<BlobSpec>> {
    (1usize..3)
        .prop_flat_map(|k| {
            (
                archive_layer(),
                mutated(
                    config_doc(
                        prop_oneof![
                            8 => Just(json!("@DIFF0")),
                            1 => Just(json!("@BLOB0")),
                            1 => digest_string().prop_map(Value::from),
                        ]
                        .boxed(),
                        k..k + 1,
                    ),
                    8,
                ),
                mutated(
                    manifest_doc(
                        blob_ref(1, CONFIG_TYPES),
                        blob_ref(0, LAYER_TYPES),
                        k..k + 1,
                    ),
                    8,
                ),
                mutated(
                    index_doc(
                        (blob_ref(2, MANIFEST_ONLY), platform_value())
                            .prop_map(|(mut d, p)| {
                                if let Value::Object(o) = &mut d {
                                    o.entry("platform").or_insert(p);
                                }
                                d
                            })
                            .boxed(),
                        1..3,
                    ),
                    8,
                ),
                prop::option::of(prop_oneof![json_value(), mutated(shaped_doc(), 1)]),
            )
        })
        .prop_map(|(layer, config, manifest, index, extra)| {
            let mut v = vec![
                BlobSpec::Layer(layer),
                BlobSpec::Json(config),
                BlobSpec::Json(manifest),
                BlobSpec::Json(index),
            ];
            v.extend(extra.map(BlobSpec::Json));
            v
        })
        .boxed()
}

pub(super) fn random_blobs() -> BoxedStrategy<Vec<BlobSpec>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop_oneof![
                json_value(),
                mutated(shaped_doc(), 1),
                mutated(manifest_doc(any_blob_ref(), any_blob_ref(), 0..4), 1),
                mutated(index_doc(any_blob_ref(), 0..4), 1),
            ]
            .prop_map(BlobSpec::Json),
            1 => archive_layer().prop_map(BlobSpec::Layer),
            1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(BlobSpec::Bytes),
        ],
        0..6,
    )
    .boxed()
}

pub(super) fn archive_case() -> BoxedStrategy<ArchiveCase> {
    (
        prop_oneof![3 => structured_blobs(), 1 => random_blobs()],
        prop_oneof![
            6 => Just(Some(json!({"imageLayoutVersion": "1.0.0"}))),
            1 => json_value().prop_map(Some),
            1 => Just(None),
        ],
        prop_oneof![
            4 => mutated(
                prop_oneof![
                    index_doc(any_blob_ref(), 0..4),
                    index_doc(blob_ref(3, INDEX_TYPES), 1..3),
                    index_doc(blob_ref(2, MANIFEST_ONLY), 1..3),
                ]
                .boxed(),
                3,
            )
            .prop_map(Some),
            1 => json_value().prop_map(Some),
            1 => Just(None),
        ],
        prop::option::weighted(0.15, mutated(docker_manifest(), 3)),
        prop::bool::weighted(0.8),
        prop_oneof![Just(Vec::new()), prop::collection::vec(ar_entry(), 1..3),],
        prop::option::weighted(0.05, any::<Index>()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(blobs, oci_layout, index, docker, all_blobs, extra, truncate, unpack, native)| {
                ArchiveCase {
                    blobs,
                    oci_layout,
                    index,
                    docker,
                    all_blobs,
                    extra,
                    truncate,
                    unpack,
                    native,
                }
            },
        )
        .boxed()
}

pub(super) fn file_entry(path: String, data: Vec<u8>) -> RawEntry {
    RawEntry {
        path,
        kind: b'0',
        data,
        link: String::new(),
        mode: 0o644,
        uid: 0,
        pax: Vec::new(),
    }
}

pub(super) fn archive_bytes(c: &ArchiveCase) -> Vec<u8> {
    let to_vec = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    let mut built: Vec<Built> = Vec::new();
    for b in &c.blobs {
        let (bytes, plain) = match b {
            BlobSpec::Json(v) => {
                let bytes = to_vec(&fill(v, &built));
                (bytes.clone(), bytes)
            }
            BlobSpec::Layer(l) => {
                let plain = layer_bytes(
                    &LayerCase {
                        gzip: false,
                        ..l.clone()
                    },
                    |t| t.replace('@', "/nonexistent/"),
                );
                (if l.gzip { gzip(&plain) } else { plain.clone() }, plain)
            }
            BlobSpec::Bytes(b) => (b.clone(), b.clone()),
        };
        built.push(Built {
            digest: Digest::of(&bytes),
            diff: Digest::of(&plain),
            bytes,
        });
    }
    let mut entries = Vec::new();
    if let Some(v) = &c.oci_layout {
        entries.push(file_entry("oci-layout".into(), to_vec(v)));
    }
    if let Some(v) = &c.index {
        entries.push(file_entry("index.json".into(), to_vec(&fill(v, &built))));
    }
    if let Some(v) = &c.docker {
        entries.push(file_entry("manifest.json".into(), to_vec(&fill(v, &built))));
    }
    if c.all_blobs {
        for (n, (b, spec)) in built.iter().zip(&c.blobs).enumerate() {
            entries.push(file_entry(
                format!("blobs/sha256/{}", b.digest.hex()),
                b.bytes.clone(),
            ));
            match spec {
                BlobSpec::Json(_) => entries.push(file_entry(
                    format!("{}.json", b.digest.hex()),
                    b.bytes.clone(),
                )),
                BlobSpec::Layer(_) => entries.push(RawEntry {
                    kind: b'2',
                    link: format!("../blobs/sha256/{}", b.digest.hex()),
                    ..file_entry(format!("l{n}/layer.tar"), Vec::new())
                }),
                BlobSpec::Bytes(_) => {}
            }
        }
    }
    for e in &c.extra {
        let data = match (&e.content, e.kind) {
            (_, b'1' | b'2' | b'5') => Vec::new(),
            (ArContent::Blob(n), _) => built.get(*n).map(|b| b.bytes.clone()).unwrap_or_default(),
            (ArContent::Json(v), _) => to_vec(&fill(v, &built)),
            (ArContent::Bytes(b), _) => b.clone(),
        };
        entries.push(RawEntry {
            kind: e.kind,
            link: name_of(&e.link, &built),
            ..file_entry(name_of(&e.name, &built), data)
        });
    }
    let mut bytes = raw_tar(&entries);
    if let Some(i) = c.truncate {
        bytes.truncate(i.index(bytes.len() + 1));
    }
    bytes
}

/// A manager in a temporary directory and a runtime to drive its loads.
pub(super) struct LoadRig {
    pub(super) _dir: tempfile::TempDir,
    pub(super) m: std::sync::Arc<crate::Manager>,
    pub(super) rt: tokio::runtime::Runtime,
}

impl LoadRig {
    /// What the loads that succeeded left: blobs and unpacked layers.
    fn print(&self, name: &str) {
        use crate::snapshot::Driver;
        let blobs = self.m.content.list().map(|l| l.len()).unwrap_or(0);
        let layers = |d| self.m.snapshots.list_all(d).map(|l| l.len()).unwrap_or(0);
        eprintln!(
            "proptest {name}: store holds {blobs} blobs, {} overlayfs and {} native snapshots",
            layers(Driver::Overlay),
            layers(Driver::Native)
        );
    }
}

pub(super) fn load_rig() -> LoadRig {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::config::Config {
        root: dir.path().join("root"),
        state: dir.path().join("state"),
        ..Default::default()
    };
    let m = std::sync::Arc::new(crate::Manager::open(config).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    LoadRig { _dir: dir, m, rt }
}

/// Loads `bytes` through the upload path (spool, plan, store, unpack):
/// errors are fine; a panic, here or in a blocking task (which the load
/// reports as an internal error), is not, and no lease may be left behind.
pub(super) fn load_archive(
    rig: &LoadRig,
    bytes: &[u8],
    unpack: bool,
    native: bool,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    use crate::archive::{load, ArchiveError, LoadOptions, Spool};
    let r = rig.rt.block_on(async {
        let mut s = Spool::create(&rig.m)?;
        for c in bytes.chunks(1000) {
            s.write(c).await?;
        }
        let opts = LoadOptions {
            snapshotter: Some(if native { "native" } else { "overlayfs" }.to_owned()),
            unpack,
        };
        load(&rig.m, "default", s.finish().await?, opts).await
    });
    tally.add(&r);
    if let Err(ArchiveError::Internal(e)) = &r {
        prop_assert!(!e.contains("panic"), "a load task panicked: {}", e);
    }
    let leases = crate::lease::list(&rig.m.meta, "default").map(|l| l.len());
    prop_assert!(
        matches!(leases, Ok(0) | Err(_)),
        "leases left: {:?}",
        leases
    );
    Ok(())
}

#[test]
pub(super) fn archives_of_any_bytes_are_refused_without_panics() {
    let rig = load_rig();
    let tally = Tally::default();
    check(
        "archive_any_bytes_disk",
        disk_cases(128),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..4096),
            (archive_case(), any::<Index>(), any::<u8>()).prop_map(|(c, i, b)| {
                let mut bytes = archive_bytes(&c);
                if !bytes.is_empty() {
                    let i = i.index(bytes.len());
                    bytes[i] = b;
                }
                bytes
            }),
        ],
        |bytes| load_archive(&rig, &bytes, true, false, &tally),
    );
    tally.print("archive_any_bytes_disk");
    rig.print("archive_any_bytes_disk");
}

#[test]
pub(super) fn archives_of_any_documents_load_or_fail_without_panics() {
    let rig = load_rig();
    let tally = Tally::default();
    check(
        "archive_documents_disk",
        disk_cases(64),
        archive_case(),
        |c| load_archive(&rig, &archive_bytes(&c), c.unpack, c.native, &tally),
    );
    tally.print("archive_documents_disk");
    rig.print("archive_documents_disk");
}
