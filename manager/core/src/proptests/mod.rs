//! Property tests (proptest, stable Rust) for every parser of outside input
//! the manager core has: image references (and platforms), image documents
//! (manifests, indexes, configs), layer tarballs applied to a snapshot, and
//! uploaded image archives.
//!
//! The suite runs 500 to 2000 cases of each in-memory property and 64 to 128
//! of each that touches the disk, about 1 s each in a debug build. Each
//! prints its time and how its cases ended (`--nocapture`), to show how deep
//! the generated inputs reach. For a long run, set `BERTH_PROPTEST_CASES=N`:
//! the in-memory properties run N cases, those that touch the disk (layer
//! apply, archive load) N/10, unless `BERTH_PROPTEST_DISK_CASES` says
//! otherwise:
//!
//! ```text
//! BERTH_PROPTEST_CASES=500000 BERTH_PROPTEST_DISK_CASES=50000 \
//!     cargo test -p berth-core --release proptests -- --nocapture
//! ```
//!
//! Failures are not persisted to `proptest-regressions` files (the runner
//! prints the minimised input): each crash a run finds is to become a plain
//! `#[test]` next to the code it crashed.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Range;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::content::Digest;
use crate::descriptor::media;
use crate::image::{self, Desc, Platform};

// ---------------------------------------------------------------------------
// Running properties.

// ---------------------------------------------------------------------------
// Generators shared by several properties.

/// Strings with many of the characters parsers split on.
fn dense_string() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-zA-Z0-9:@/._\\-\\[\\]+]{0,80}",
        "[:@/.]{0,40}",
        prop::collection::vec(
            prop::sample::select(vec![
                "a",
                "B",
                "0",
                ":",
                "@",
                "/",
                ".",
                "_",
                "__",
                "-",
                "[",
                "]",
                "::1",
                "sha256:",
                "localhost",
                "docker.io",
                "é",
                "\u{0}",
                "\u{202e}",
                " ",
            ]),
            0..40
        )
        .prop_map(|v| v.concat()),
    ]
    .boxed()
}

/// Any string: unicode, long, or dense in separators.
fn any_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => dense_string(),
        2 => any::<String>(),
        1 => ".{0,600}",
        1 => "[a-z/:@]{250,300}",
    ]
    .boxed()
}

fn digest_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")),
        1 => "[0-9a-f]{96}".prop_map(|h| format!("sha384:{h}")),
        1 => "[0-9a-f]{128}".prop_map(|h| format!("sha512:{h}")),
        1 => "[0-9a-fA-F]{60,66}".prop_map(|h| format!("sha256:{h}")),
        1 => "[a-z0-9+._-]{0,10}:[0-9a-zA-Z]{0,70}",
    ]
    .boxed()
}

/// Strings documents hold: media types, digests, platform words,
/// placeholders an archive case resolves to real digests and sizes.
fn doc_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            media::OCI_LAYER,
            media::OCI_LAYER_GZIP,
            media::DOCKER_LIST,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP,
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.empty.v1+json",
            "linux",
            "windows",
            "amd64",
            "arm64",
            "arm",
            "v7",
            "v8",
            "layers",
            "",
            "1.0.0",
            "2024-01-01T00:00:00Z",
            "@BLOB0",
            "@BLOB1",
            "@BLOB2",
            "@SIZE0",
            "@SIZE1",
            "@SIZE2",
            "@DIFF0",
        ])
        .prop_map(str::to_owned),
        2 => digest_string(),
        1 => dense_string(),
        1 => any::<String>(),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => (0u64..5000).prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        3 => doc_string().prop_map(Value::String),
    ]
    .boxed()
}

fn doc_key() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "mediaType", "schemaVersion", "manifests", "layers", "config", "digest", "size",
            "platform", "os", "architecture", "variant", "os.version", "os.features",
            "features", "rootfs", "diff_ids", "type", "annotations", "urls", "artifactType",
            "subject", "history", "created", "author", "Config", "RepoTags", "Layers",
            "imageLayoutVersion", "data", "org.opencontainers.image.ref.name",
            "io.containerd.image.name",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z._]{0,8}",
    ]
    .boxed()
}

/// Any JSON value, with the keys and strings image documents use.
fn json_value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((doc_key(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// An edit of a well-formed document: the value at a path (chosen by the
/// indexes, one per level) replaced by any value, or removed.
fn mutation() -> BoxedStrategy<Mutation> {
    (
        prop::collection::vec(any::<Index>(), 1..6),
        prop_oneof![
            4 => leaf().prop_map(Some),
            2 => json_value().prop_map(Some),
            1 => Just(None),
        ],
    )
        .prop_map(|(path, value)| Mutation { path, value })
        .boxed()
}

/// Documents from `doc`, one in `1 + clean` left as is, the others with one
/// or two edits.
fn mutated(doc: BoxedStrategy<Value>, clean: u32) -> BoxedStrategy<Value> {
    (
        doc,
        prop_oneof![
            clean => Just(Vec::new()),
            1 => prop::collection::vec(mutation(), 1..3),
        ],
    )
        .prop_map(|(mut v, edits)| {
            for m in edits {
                mutate(&mut v, &m.path, m.value);
            }
            v
        })
        .boxed()
}

fn strings(words: &[&'static str]) -> BoxedStrategy<Value> {
    prop::collection::vec(pick(words), 0..3)
        .prop_map(Value::Array)
        .boxed()
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

fn platform_value() -> BoxedStrategy<Value> {
    obj(vec![
        (
            "os",
            field(prop_oneof![4 => pick(&["linux"]), 1 => pick(&["windows", ""])]),
        ),
        (
            "architecture",
            field(prop_oneof![
                2 => pick(&[host_arch()]),
                1 => pick(&["amd64", "arm64", "arm", ""]),
            ]),
        ),
        ("variant", opt_field(pick(&["v7", "v8", ""]))),
        ("os.version", opt_field(pick(&["10.0", ""]))),
        ("os.features", opt_field(strings(&["win32k", ""]))),
    ])
}

fn annotations() -> BoxedStrategy<Value> {
    prop::collection::btree_map(
        prop_oneof![
            pick(&[
                "org.opencontainers.image.ref.name",
                "io.containerd.image.name",
            ])
            .prop_map(|v| v.as_str().unwrap_or_default().to_owned()),
            "[a-z.]{0,12}",
        ],
        prop_oneof![
            reference_grammar().prop_map(|r| r.text),
            dense_string(),
            Just("import-2024-01-01@sha256:0000000000000000000000000000000000000000000000000000000000000000".to_owned()),
        ],
        0..3,
    )
    .prop_map(|m| json!(m))
    .boxed()
}

/// A descriptor whose digest and size come from `digest` and `size`.
fn desc_value(
    media_types: &[&'static str],
    digest: BoxedStrategy<Value>,
    size: BoxedStrategy<Value>,
) -> BoxedStrategy<Value> {
    obj(vec![
        ("mediaType", field(pick(media_types))),
        ("digest", field(digest)),
        ("size", field(size)),
        ("platform", opt_field(platform_value())),
        ("annotations", opt_field(annotations())),
        ("urls", opt_field(strings(&["https://example.com/x", ""]))),
    ])
}

const MANIFEST_TYPES: &[&str] = &[
    media::OCI_MANIFEST,
    media::DOCKER_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_LIST,
];
const INDEX_TYPES: &[&str] = &[media::OCI_INDEX, media::DOCKER_LIST];
const MANIFEST_ONLY: &[&str] = &[media::OCI_MANIFEST, media::DOCKER_MANIFEST];
const CONFIG_TYPES: &[&str] = &[media::OCI_CONFIG, media::DOCKER_CONFIG, media::OCI_LAYER];
const LAYER_TYPES: &[&str] = &[
    media::OCI_LAYER,
    media::OCI_LAYER_GZIP,
    media::DOCKER_LAYER_GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd",
    media::OCI_CONFIG,
];

fn random_desc(types: &[&'static str]) -> BoxedStrategy<Value> {
    desc_value(
        types,
        digest_string().prop_map(Value::from).boxed(),
        (0u64..100_000).prop_map(Value::from).boxed(),
    )
}

fn index_doc(child: BoxedStrategy<Value>, n: Range<usize>) -> BoxedStrategy<Value> {
    obj(vec![
        ("schemaVersion", field(Just(json!(2)))),
        (
            "mediaType",
            opt_field(pick(&[media::OCI_INDEX, media::DOCKER_LIST])),
        ),
        (
            "manifests",
            field(prop::collection::vec(child, n).prop_map(Value::Array)),
        ),
        ("annotations", opt_field(annotations())),
    ])
}

fn manifest_doc(
    config: BoxedStrategy<Value>,
    layer: BoxedStrategy<Value>,
    n: Range<usize>,
) -> BoxedStrategy<Value> {
    obj(vec![
        ("schemaVersion", field(Just(json!(2)))),
        (
            "mediaType",
            opt_field(pick(&[media::OCI_MANIFEST, media::DOCKER_MANIFEST])),
        ),
        ("config", field(config)),
        (
            "layers",
            field(prop::collection::vec(layer, n).prop_map(Value::Array)),
        ),
        ("subject", opt_field(random_desc(MANIFEST_TYPES))),
    ])
}

fn config_doc(diff_id: BoxedStrategy<Value>, n: Range<usize>) -> BoxedStrategy<Value> {
    obj(vec![
        (
            "architecture",
            field(prop_oneof![
                2 => pick(&[host_arch()]),
                1 => pick(&["amd64", "arm64", "s390x"]),
            ]),
        ),
        ("os", field(pick(&["linux", "windows"]))),
        ("variant", opt_field(pick(&["v7", "v8"]))),
        (
            "rootfs",
            field(obj(vec![
                ("type", field(pick(&["layers", "other"]))),
                (
                    "diff_ids",
                    field(prop::collection::vec(diff_id, n).prop_map(Value::Array)),
                ),
            ])),
        ),
        (
            "config",
            opt_field(obj(vec![
                ("Cmd", opt_field(strings(&["/bin/sh", "-c", ""]))),
                ("Env", opt_field(strings(&["PATH=/bin", "A"]))),
                ("User", opt_field(pick(&["root", "1000:1000", ""]))),
            ])),
        ),
        (
            "created",
            opt_field(pick(&["2024-01-01T00:00:00Z", "yesterday", ""])),
        ),
        (
            "history",
            opt_field(
                prop::collection::vec(
                    obj(vec![
                        ("created_by", opt_field(pick(&["RUN x", ""]))),
                        (
                            "empty_layer",
                            opt_field(any::<bool>().prop_map(Value::Bool)),
                        ),
                    ]),
                    0..3,
                )
                .prop_map(Value::Array),
            ),
        ),
    ])
}

/// A manifest, index or config as registries send them.
fn shaped_doc() -> BoxedStrategy<Value> {
    prop_oneof![
        index_doc(random_desc(MANIFEST_TYPES), 0..4),
        manifest_doc(random_desc(CONFIG_TYPES), random_desc(LAYER_TYPES), 0..4),
        config_doc(digest_string().prop_map(Value::from).boxed(), 0..4),
    ]
    .boxed()
}

mod archives;
mod documents;
mod layers;
mod references;

// The sections share generators (archives build layers, documents use the
// reference grammar).
use berth_testkit::json::{field, mutate, obj, opt_field, pick, Mutation};
use berth_testkit::run::{cases, check, disk_cases, Tally};
use layers::*;
use references::*;
