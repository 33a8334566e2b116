//! Request chains (`--step`): [`Chain`], the steps of a run, built once, and [`Chains`], one
//! connection's chains, one per pipeline slot. Slot `s` of a connection's [`InFlight`] is
//! chain `s`: it sends step 1, and when the answer comes sends step 2, built from that
//! answer, and so on, then step 1 again. A chain thus has one request in flight at a time,
//! and a connection's `--pipeline` slots are that many independent chains.
//!
//! An error answer, or an answer without a field the next step needs, counts as an error
//! and sends the chain back to step 1, so that a run survives a server that runs out of
//! resources. Only the answers of steps whose successor has placeholders are read beyond
//! their `queryIndex`, and only for the fields named.
//!
//! [`InFlight`]: super::flight::InFlight

use std::sync::Arc;

use anyhow::anyhow;
use resman_sdk::protocol::Framing;
use serde_json::value::RawValue;

use super::args::Step;
use super::response::{Fields, Parsed};
use super::template::{push_value, Template};

/// The steps of a run, in order, each a request template.
pub(super) struct Chain {
    steps: Vec<ChainStep>,
}

struct ChainStep {
    kind: String,
    template: Template,
}

/// How one step fared, over a connection or a whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct StepCount {
    /// Answers received to this step (by the end of a run, every request sent is answered).
    pub(super) requests: u64,
    /// Error answers, and answers that lacked a field the next step needs.
    pub(super) errors: u64,
}

impl StepCount {
    pub(super) const ZERO: StepCount = StepCount {
        requests: 0,
        errors: 0,
    };
}

/// Why an answer counts as an error.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Its `resultJob` holds `err`.
    Response,
    /// It lacks a field the next step needs; says which, for the report.
    MissingField(String),
}

impl Chain {
    /// Builds the steps' templates. The first step may not have placeholders: nothing
    /// precedes it.
    ///
    /// # Errors
    ///
    /// A message naming the step whose payload is wrong, and how.
    pub(super) fn new(steps: &[Step], framing: Framing) -> anyhow::Result<Chain> {
        let mut built = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            let name = || format!("--step {} ({})", i + 1, step.kind);
            let template = Template::new(&step.kind, step.payload.as_deref(), framing)
                .map_err(|e| anyhow!("{} {e}", name()))?;
            if let (0, Some(field)) = (i, template.fields().first()) {
                return Err(anyhow!(
                    "{} uses {{{{{field}}}}}, but the first step has no previous answer to \
                     take it from",
                    name()
                ));
            }
            built.push(ChainStep {
                kind: step.kind.clone(),
                template,
            });
        }
        if built.is_empty() {
            return Err(anyhow!("a chain needs at least one --step"));
        }
        Ok(Chain { steps: built })
    }

    /// The steps' request types, in order.
    pub(super) fn kinds(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.kind.as_str())
    }

    /// About how many bytes the largest request takes, for sizing buffers.
    pub(super) fn len_hint(&self) -> usize {
        self.steps
            .iter()
            .map(|s| s.template.len_hint())
            .max()
            .unwrap_or(0)
    }

    /// The fields that the step after `step` takes from `step`'s answer.
    fn needs(&self, step: usize) -> &[String] {
        self.steps
            .get(step + 1)
            .map_or(&[], |next| next.template.fields())
    }
}

/// One connection's chains, a slot each, and its per-step counts.
pub(super) struct Chains {
    chain: Arc<Chain>,
    slots: Vec<Slot>,
    counts: Vec<StepCount>,
    /// Which of the needed fields an answer held; kept to reuse its allocation.
    found: Vec<bool>,
}

/// Where one chain is.
struct Slot {
    /// The step it sends next, or awaits the answer of.
    step: usize,
    /// The JSON text of the fields the next step needs, in its template's field order.
    values: Vec<Vec<u8>>,
}

impl Chains {
    pub(super) fn new(chain: Arc<Chain>, pipeline: usize) -> Chains {
        let fields = chain
            .steps
            .iter()
            .map(|s| s.template.fields().len())
            .max()
            .unwrap_or(0);
        let slots = (0..pipeline)
            .map(|_| Slot {
                step: 0,
                values: vec![Vec::new(); fields],
            })
            .collect();
        let counts = vec![StepCount::default(); chain.steps.len()];
        Chains {
            chain,
            slots,
            counts,
            found: Vec::new(),
        }
    }

    /// Appends `slot`'s next request, with `query_index`, to `out`.
    pub(super) fn push(&self, out: &mut Vec<u8>, slot: usize, query_index: u64) {
        let Slot { step, values } = &self.slots[slot];
        self.chain.steps[*step]
            .template
            .push(out, query_index, values);
    }

    /// An answer to `slot`'s request is being read: its fields come next, through
    /// [`field`](Self::field). Returns whether the next step needs any.
    fn begin_answer(&mut self, slot: usize) -> bool {
        let names = self.chain.needs(self.slots[slot].step);
        self.found.clear();
        self.found.resize(names.len(), false);
        !names.is_empty()
    }

    /// A field of the answer to `slot`'s request: kept when the next step needs it.
    fn field(&mut self, slot: usize, name: &str, value: &RawValue) {
        let Slot { step, values } = &mut self.slots[slot];
        let names = self.chain.needs(*step);
        if let Some(i) = names.iter().position(|n| n == name) {
            values[i].clear();
            push_value(&mut values[i], value.get());
            self.found[i] = true;
        }
    }

    /// Takes the answer to `slot`'s request, its fields already read: moves its chain on a
    /// step, or, when the answer is an error or lacks a field the next step needs, back to
    /// the first.
    pub(super) fn answered(&mut self, slot: usize, answer: &Parsed) -> Option<Failure> {
        let step = self.slots[slot].step;
        self.counts[step].requests += 1;
        let failure = if answer.is_error {
            Some(Failure::Response)
        } else {
            self.missing_field(step)
        };
        self.found.clear();
        self.slots[slot].step = match failure {
            Some(_) => {
                self.counts[step].errors += 1;
                0
            }
            None => (step + 1) % self.chain.steps.len(),
        };
        failure
    }

    /// Which field the answer to `step` lacked that the next step needs, if any.
    fn missing_field(&self, step: usize) -> Option<Failure> {
        let names = self.chain.needs(step);
        let missing = (0..names.len()).find(|&i| !self.found.get(i).copied().unwrap_or(false))?;
        Some(Failure::MissingField(format!(
            "the answer to {} has no field \"{}\" for step {} ({})",
            self.chain.steps[step].kind,
            names[missing],
            step + 2,
            self.chain.steps[step + 1].kind
        )))
    }

    /// About how many bytes a request takes, for sizing buffers.
    pub(super) fn len_hint(&self) -> usize {
        self.chain.len_hint()
    }

    /// The counts so far, one per step.
    pub(super) fn counts(&self) -> &[StepCount] {
        &self.counts
    }
}

/// Adds `other`'s counts to `totals`, step by step.
pub(super) fn add_counts(totals: &mut Vec<StepCount>, other: &[StepCount]) {
    if totals.len() < other.len() {
        totals.resize(other.len(), StepCount::default());
    }
    for (total, count) in totals.iter_mut().zip(other) {
        total.requests += count.requests;
        total.errors += count.errors;
    }
}

/// The [`Fields`] of an answer to one of a connection's chains, handed to the chain of the
/// slot whose request it answers; `slot_of` finds that slot from the query index.
pub(super) struct SlotFields<'c, F> {
    chains: &'c mut Chains,
    slot_of: F,
    slot: Option<usize>,
}

impl<'c, F: Fn(u64) -> Option<usize>> SlotFields<'c, F> {
    pub(super) fn new(chains: &'c mut Chains, slot_of: F) -> Self {
        SlotFields {
            chains,
            slot_of,
            slot: None,
        }
    }
}

impl<F: Fn(u64) -> Option<usize>> Fields for SlotFields<'_, F> {
    fn answers(&mut self, query_index: u64) -> bool {
        // An answer to no request in flight is an error the caller reports; it keeps nothing.
        self.slot = (self.slot_of)(query_index);
        self.slot.is_some_and(|slot| self.chains.begin_answer(slot))
    }

    fn field(&mut self, name: &str, value: &RawValue) {
        if let Some(slot) = self.slot {
            self.chains.field(slot, name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::response::parse_response;
    use super::super::test_server::{args, assert_sane, server, Mode};
    use super::super::{run, BenchArgs};
    use super::*;
    use std::sync::atomic::Ordering;

    fn step(kind: &str, payload: Option<&str>) -> Step {
        Step {
            kind: kind.into(),
            payload: payload.map(Into::into),
        }
    }

    fn lease_chain(pipeline: usize) -> Chains {
        let steps = [
            step("getProxy", Some("{}")),
            step("releaseProxy", Some(r#"{"lease":{{lease}},"t":{{token}}}"#)),
        ];
        let chain = Chain::new(&steps, Framing::Newline).unwrap();
        Chains::new(Arc::new(chain), pipeline)
    }

    /// The request `slot` would send next, with query index 9, without its terminator.
    fn next(chains: &Chains, slot: usize) -> String {
        let mut out = Vec::new();
        chains.push(&mut out, slot, 9);
        assert_eq!(out.pop(), Some(b'\n'));
        String::from_utf8(out).unwrap()
    }

    /// Gives `slot` the answer with `result_job`.
    fn answer(chains: &mut Chains, slot: usize, result_job: &str) -> Option<Failure> {
        let body = format!(r#"{{"queryIndex":9,"resultJob":{result_job}}}"#);
        let mut fields = SlotFields::new(chains, |index| (index == 9).then_some(slot));
        let parsed = parse_response(body.as_bytes(), &mut fields).unwrap();
        chains.answered(slot, &parsed)
    }

    #[test]
    fn each_slot_runs_its_own_chain_from_its_answers() {
        let mut c = lease_chain(2);
        let get = r#"{"type":"getProxy","queryIndex":9,"payload":{}}"#;
        assert_eq!(next(&c, 0), get);
        assert_eq!(next(&c, 1), get);
        let job = "{\"proxy\":\"h:1\",\"lease\":\"L1\",\n \"token\": [1, 2]}";
        assert_eq!(answer(&mut c, 0, job), None);
        assert_eq!(
            next(&c, 0),
            r#"{"type":"releaseProxy","queryIndex":9,"payload":{"lease":"L1","t":[1, 2]}}"#
        );
        assert_eq!(next(&c, 1), get, "slot 1 is still at step 1");
        assert_eq!(answer(&mut c, 1, r#"{"token":7,"lease":42}"#), None);
        assert_eq!(
            next(&c, 1),
            r#"{"type":"releaseProxy","queryIndex":9,"payload":{"lease":42,"t":7}}"#
        );
        assert_eq!(answer(&mut c, 0, r#"{"released":true}"#), None);
        assert_eq!(next(&c, 0), get, "after the last step, the first again");
        let counts = [
            StepCount {
                requests: 2,
                errors: 0,
            },
            StepCount {
                requests: 1,
                errors: 0,
            },
        ];
        assert_eq!(c.counts(), counts);
    }

    #[test]
    fn an_error_or_a_missing_field_restarts_the_chain() {
        let mut c = lease_chain(1);
        let get = r#"{"type":"getProxy","queryIndex":9,"payload":{}}"#;
        let failure = answer(&mut c, 0, r#"{"err":"no proxy free","code":"unavailable"}"#);
        assert_eq!(failure, Some(Failure::Response));
        assert_eq!(next(&c, 0), get);

        let failure = answer(&mut c, 0, r#"{"lease":"L1"}"#);
        let Some(Failure::MissingField(msg)) = failure else {
            panic!("{failure:?}");
        };
        assert_eq!(
            msg,
            "the answer to getProxy has no field \"token\" for step 2 (releaseProxy)"
        );
        assert_eq!(next(&c, 0), get);
        assert!(matches!(
            answer(&mut c, 0, "null"),
            Some(Failure::MissingField(_))
        ));

        assert_eq!(answer(&mut c, 0, r#"{"lease":"L2","token":1}"#), None);
        let failure = answer(&mut c, 0, r#"{"err":"unknown lease","code":"not_found"}"#);
        assert_eq!(failure, Some(Failure::Response));
        assert_eq!(next(&c, 0), get, "a failed last step starts over too");
        assert_eq!(
            c.counts(),
            [
                StepCount {
                    requests: 4,
                    errors: 3
                },
                StepCount {
                    requests: 1,
                    errors: 1
                }
            ]
        );
    }

    #[test]
    fn a_placeholder_in_the_first_step_is_rejected() {
        let steps = [step("a", Some(r#"{"x":{{x}}}"#)), step("b", None)];
        let msg = Chain::new(&steps, Framing::Crab).err().unwrap().to_string();
        assert!(msg.starts_with("--step 1 (a) uses {{x}}"), "{msg}");
        let steps = [step("a", None), step("b", Some(r#"{"x":"{{x}}"}"#))];
        let msg = Chain::new(&steps, Framing::Crab).err().unwrap().to_string();
        assert!(
            msg.starts_with("--step 2 (b) puts {{x}} inside a string"),
            "{msg}"
        );
    }

    #[test]
    fn counts_add_up_step_by_step() {
        let one = StepCount {
            requests: 3,
            errors: 1,
        };
        let mut totals = Vec::new();
        add_counts(&mut totals, &[one, one]);
        add_counts(&mut totals, &[one, StepCount::default()]);
        add_counts(&mut totals, &[]);
        let two = StepCount {
            requests: 6,
            errors: 2,
        };
        assert_eq!(totals, [two, one]);
    }

    #[test]
    fn chains_give_back_every_lease_they_get() {
        let server = server(Mode::Leases);
        let report = run(BenchArgs {
            steps: vec![
                "getLease".parse().unwrap(),
                r#"releaseLease={"lease": {{lease}}}"#.parse().unwrap(),
            ],
            ..args(&server, 3, 4, 2000)
        })
        .unwrap();
        assert_sane(&report);
        assert_eq!(report.kind, "getLease -> releaseLease");
        assert_eq!(report.requests, 2000);
        let [get, release] = &report.steps[..] else {
            panic!("{report:?}");
        };
        assert_eq!(
            (get.kind.as_str(), release.kind.as_str()),
            ("getLease", "releaseLease")
        );
        assert_eq!(get.requests + release.requests, 2000);
        let stats = &server.stats;
        let refused = stats.leases_refused.load(Ordering::Relaxed) as u64;
        assert_eq!(stats.bad_releases.load(Ordering::Relaxed), 0, "{report:?}");
        assert_eq!(
            stats.released.load(Ordering::Relaxed) as u64,
            release.requests
        );
        // Every fifth getLease is refused, and its chain starts over with a getLease.
        assert!(refused > 0);
        assert_eq!((get.errors, release.errors), (refused, 0));
        assert_eq!(report.errors, refused);
        // A chain holds at most one lease, so releases trail grants by at most the chains.
        let granted = get.requests - refused;
        assert!(granted >= release.requests && granted - release.requests <= 12);
        assert!(report.to_text().contains("step 2 releaseLease: "));
        let first = report.first_error.unwrap();
        assert_eq!(first.code.as_deref(), Some("unavailable"));
    }

    #[test]
    fn a_missing_field_is_an_error_and_the_next_step_is_not_sent() {
        let server = server(Mode::Leases);
        let report = run(BenchArgs {
            steps: vec![
                "ping".parse().unwrap(),
                r#"releaseLease={"lease":{{lease}}}"#.parse().unwrap(),
            ],
            ..args(&server, 2, 3, 100)
        })
        .unwrap();
        assert_eq!((report.requests, report.errors), (100, 100));
        assert_eq!(report.steps[1].requests, 0);
        assert_eq!(stats_sum(&server), 0);
        let first = report.first_error.unwrap();
        assert_eq!(
            first.err,
            "the answer to ping has no field \"lease\" for step 2 (releaseLease)"
        );
        assert_eq!(first.code, None);
    }

    fn stats_sum(server: &super::super::test_server::TestServer) -> usize {
        server.stats.released.load(Ordering::Relaxed)
            + server.stats.bad_releases.load(Ordering::Relaxed)
    }
}
