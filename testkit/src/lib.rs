//! Helpers shared by the property tests of several crates (dev-only).

pub mod run {
    //! Running properties: case counts from the environment for long runs,
    //! a runner that shrinks and reports, a tally of how cases ended.

    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::time::Instant;

    use proptest::prelude::*;
    use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};

    fn env_cases(var: &str) -> Option<u32> {
        std::env::var(var).ok()?.parse().ok()
    }

    /// Cases for a property that stays in memory.
    pub fn cases(default: u32) -> u32 {
        env_cases("BERTH_PROPTEST_CASES").unwrap_or(default)
    }

    /// Cases for a property that writes to the disk.
    pub fn disk_cases(default: u32) -> u32 {
        env_cases("BERTH_PROPTEST_DISK_CASES")
            .or_else(|| env_cases("BERTH_PROPTEST_CASES").map(|n| (n / 10).max(1)))
            .unwrap_or(default)
    }

    /// Runs `test` on `cases` values of `strategy`; a failure (an assertion or a
    /// panic, which proptest catches) is shrunk to a minimal input and reported.
    pub fn check<S>(
        name: &str,
        cases: u32,
        strategy: S,
        test: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) where
        S: Strategy,
        S::Value: Debug,
    {
        let mut runner = TestRunner::new(PtConfig {
            cases,
            failure_persistence: None,
            ..PtConfig::default()
        });
        let start = Instant::now();
        let r = runner.run(&strategy, test);
        eprintln!("proptest {name}: {cases} cases in {:.2?}", start.elapsed());
        if let Err(e) = r {
            panic!("{name}: {e}");
        }
    }

    /// How the cases of a property ended (the error variants they stopped at),
    /// printed with its timing to show how deep the generated inputs reach.
    #[derive(Default)]
    pub struct Tally(std::sync::Mutex<BTreeMap<String, usize>>);

    impl Tally {
        pub fn add<T, E: Debug>(&self, r: &Result<T, E>) {
            let k = match r {
                Ok(_) => "ok".to_owned(),
                Err(e) => {
                    let d = format!("{e:?}");
                    d.split(|c: char| !c.is_alphanumeric())
                        .next()
                        .unwrap_or("")
                        .to_owned()
                }
            };
            self.count(&k);
        }

        pub fn count(&self, k: &str) {
            if let Ok(mut m) = self.0.lock() {
                *m.entry(k.to_owned()).or_default() += 1;
            }
        }

        pub fn print(&self, name: &str) {
            if let Ok(m) = self.0.lock() {
                eprintln!("proptest {name}: outcomes {m:?}");
            }
        }
    }
}

pub mod json {
    //! JSON values shaped like the documents a parser expects, and edits
    //! of them, for proptest.

    use proptest::prelude::*;
    use proptest::sample::Index;
    use serde_json::Value;

    /// A field of a shaped document, there (the mutations below remove some).
    pub fn field(good: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
        good.prop_map(Some).boxed()
    }

    /// A field that is as often absent as present.
    pub fn opt_field(good: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
        prop_oneof![good.prop_map(Some), Just(None)].boxed()
    }

    #[derive(Debug, Clone)]
    pub struct Mutation {
        pub path: Vec<Index>,
        pub value: Option<Value>,
    }

    pub fn mutate(v: &mut Value, path: &[Index], new: Option<Value>) {
        let Some((i, rest)) = path.split_first() else {
            return;
        };
        let child = match v {
            Value::Object(o) if !o.is_empty() => {
                let k = o.keys().nth(i.index(o.len())).cloned().unwrap_or_default();
                if rest.is_empty() || !o.get(&k).is_some_and(|c| c.is_object() || c.is_array()) {
                    match new {
                        Some(n) => o.insert(k, n),
                        None => o.remove(&k),
                    };
                    return;
                }
                o.get_mut(&k)
            }
            Value::Array(a) if !a.is_empty() => {
                let k = i.index(a.len());
                if rest.is_empty() || !(a[k].is_object() || a[k].is_array()) {
                    match new {
                        Some(n) => a[k] = n,
                        None => {
                            a.remove(k);
                        }
                    }
                    return;
                }
                a.get_mut(k)
            }
            _ => {
                if let Some(n) = new {
                    *v = n;
                }
                return;
            }
        };
        if let Some(c) = child {
            mutate(c, rest, new);
        }
    }

    pub fn obj(fields: Vec<(&'static str, BoxedStrategy<Option<Value>>)>) -> BoxedStrategy<Value> {
        let parts: Vec<BoxedStrategy<(&'static str, Option<Value>)>> = fields
            .into_iter()
            .map(|(k, s)| s.prop_map(move |v| (k, v)).boxed())
            .collect();
        parts
            .prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                        .collect(),
                )
            })
            .boxed()
    }

    pub fn pick(words: &[&'static str]) -> BoxedStrategy<Value> {
        prop::sample::select(words.to_vec())
            .prop_map(Value::from)
            .boxed()
    }
}
