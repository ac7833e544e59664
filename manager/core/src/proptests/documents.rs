//! See the parent module for how these run.

use super::*;

// ---------------------------------------------------------------------------
// 2. Image documents.

pub(super) fn any_desc() -> BoxedStrategy<Desc> {
    (
        prop::sample::select(vec![
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            media::DOCKER_LIST,
            "",
        ]),
        digest_string(),
        any::<u64>(),
    )
        .prop_map(|(m, d, size)| Desc {
            media_type: m.to_owned(),
            digest: d,
            size,
            annotations: BTreeMap::new(),
        })
        .boxed()
}

pub(super) fn any_platform() -> BoxedStrategy<Platform> {
    let host = Platform {
        os: "linux".into(),
        architecture: host_arch().into(),
        variant: String::new(),
    };
    prop_oneof![1 => Just(host), 1 => random_platform()].boxed()
}

pub(super) fn random_platform() -> BoxedStrategy<Platform> {
    (
        prop::sample::select(vec!["linux", "windows", ""]),
        prop::sample::select(vec![host_arch(), "amd64", "arm64", "arm", ""]),
        prop::sample::select(vec!["", "v7", "v8"]),
    )
        .prop_map(|(os, architecture, variant)| Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.into(),
        })
        .boxed()
}

/// Every document parser on `bytes`: errors are fine, panics are not, and
/// what they return is consistent.
pub(super) fn parse_documents(
    bytes: &[u8],
    d: &Desc,
    want: &Platform,
    layers: usize,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    if image::sniff_media_type(bytes).is_some() {
        tally.count("sniffed");
    }
    if let Ok(m) = image::manifest(d, bytes) {
        tally.count("manifest");
        for l in std::iter::once(&m.config).chain(&m.layers) {
            prop_assert!(!l.digest.is_empty());
        }
    }
    let children = image::index_children(d, bytes);
    if children.is_ok() {
        tally.count("index");
    }
    if let Ok(c) = image::choose(d, bytes, want) {
        tally.count("chosen");
        prop_assert!(media::is_manifest(&c.media_type));
        let children = children.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(children.iter().any(|(k, _)| *k == c));
    }
    if image::config(d, bytes).is_ok() {
        tally.count("config");
    }
    if let Ok(ids) = image::diff_ids(d, bytes, layers) {
        tally.count("diff_ids");
        prop_assert_eq!(ids.len(), layers);
    }
    Ok(())
}

#[test]
pub(super) fn image_documents_never_panic_on_any_bytes() {
    let tally = Tally::default();
    check(
        "image_documents_any_bytes",
        cases(1000),
        (
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..512),
                // Almost JSON: a document with bytes flipped or cut.
                (shaped_doc(), any::<Index>(), any::<u8>()).prop_map(|(v, i, b)| {
                    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
                    if !bytes.is_empty() {
                        let i = i.index(bytes.len());
                        if b % 2 == 0 {
                            bytes[i] = b;
                        } else {
                            bytes.truncate(i);
                        }
                    }
                    bytes
                }),
            ],
            any_desc(),
            any_platform(),
            0usize..4,
        ),
        |(bytes, d, want, layers)| parse_documents(&bytes, &d, &want, layers, &tally),
    );
    tally.print("image_documents_any_bytes");
}

#[test]
pub(super) fn image_documents_never_panic_on_any_json() {
    let tally = Tally::default();
    check(
        "image_documents_any_json",
        cases(500),
        (
            prop_oneof![1 => json_value(), 4 => mutated(shaped_doc(), 1)],
            any_desc(),
            any_platform(),
            0usize..4,
        ),
        |(v, d, want, layers)| {
            let bytes = serde_json::to_vec(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            parse_documents(&bytes, &d, &want, layers, &tally)
        },
    );
    tally.print("image_documents_any_json");
}
