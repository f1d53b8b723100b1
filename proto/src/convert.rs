//! The one border between wire types and domain types.

use crate::ids::LeaseRef;
use crate::pb;
use crate::result::InvalidResult;
use crate::{EpochMetrics, Provenance, TestMetrics, TrialResult, TrialStatus};

impl From<pb::EpochMetrics> for EpochMetrics {
    fn from(m: pb::EpochMetrics) -> Self {
        EpochMetrics {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_accuracy: m.train_accuracy,
            val_loss: m.val_loss,
            val_accuracy: m.val_accuracy,
            train_binary_accuracy: m.train_binary_accuracy,
            val_binary_accuracy: m.val_binary_accuracy,
            lr: m.lr,
            seconds: m.seconds,
            images_per_sec: m.images_per_sec,
        }
    }
}

impl From<&EpochMetrics> for pb::EpochMetrics {
    fn from(m: &EpochMetrics) -> Self {
        pb::EpochMetrics {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_accuracy: m.train_accuracy,
            val_loss: m.val_loss,
            val_accuracy: m.val_accuracy,
            train_binary_accuracy: m.train_binary_accuracy,
            val_binary_accuracy: m.val_binary_accuracy,
            lr: m.lr,
            seconds: m.seconds,
            images_per_sec: m.images_per_sec,
        }
    }
}

impl From<pb::LeaseRef> for LeaseRef {
    fn from(l: pb::LeaseRef) -> LeaseRef {
        LeaseRef {
            trial: l.trial_id.into(),
            attempt: l.attempt,
        }
    }
}

impl From<&LeaseRef> for pb::LeaseRef {
    fn from(l: &LeaseRef) -> pb::LeaseRef {
        pb::LeaseRef {
            trial_id: l.trial.to_string(),
            attempt: l.attempt,
        }
    }
}

impl From<TrialStatus> for pb::TrialStatus {
    fn from(s: TrialStatus) -> Self {
        match s {
            TrialStatus::Completed => pb::TrialStatus::Completed,
            TrialStatus::Diverged => pb::TrialStatus::Diverged,
            TrialStatus::Failed => pb::TrialStatus::Failed,
            TrialStatus::Stopped => pb::TrialStatus::Stopped,
        }
    }
}

impl From<&TrialResult> for pb::TrialResult {
    fn from(r: &TrialResult) -> Self {
        pb::TrialResult {
            status: pb::TrialStatus::from(r.status) as i32,
            reason: r.reason.clone(),
            epochs: r.epochs.iter().map(pb::EpochMetrics::from).collect(),
            test: r.test.as_ref().map(|t| pb::TestMetrics {
                loss: t.loss,
                accuracy: t.accuracy,
                binary_accuracy: t.binary_accuracy,
                per_class_accuracy: t.per_class_accuracy.clone(),
                confusion: t.confusion.iter().flatten().copied().collect(),
                images: t.images,
                class_names: t.class_names.clone(),
            }),
            best_val_accuracy: r.best_val_accuracy,
            train_images: r.train_images,
            val_images: r.val_images,
            parameters: r.parameters,
            device: r.device.clone(),
            seconds: r.seconds,
            notes: r.notes.clone(),
            diverged_epoch: r.diverged_epoch,
            resumed_from_epoch: r.resumed_from_epoch,
            provenance: r.provenance.as_ref().map(|p| pb::Provenance {
                semantics: p.semantics,
                worker_version: p.worker_version.clone(),
                libtorch_version: p.libtorch_version.clone(),
                device_name: p.device_name.clone(),
                threads: p.threads,
                started_unix_ms: p.started_unix_ms,
                finished_unix_ms: p.finished_unix_ms,
                dataset_fingerprint: p.dataset_fingerprint.clone(),
            }),
        }
    }
}

fn invalid(field: &str, problem: &str) -> InvalidResult {
    InvalidResult {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The border for results: every value is copied bit for bit, then the whole result is
/// checked ([`TrialResult::validate`]); the error names the field.
impl TryFrom<pb::TrialResult> for TrialResult {
    type Error = InvalidResult;

    fn try_from(r: pb::TrialResult) -> Result<Self, InvalidResult> {
        let status = match pb::TrialStatus::try_from(r.status) {
            Ok(pb::TrialStatus::Completed) => TrialStatus::Completed,
            Ok(pb::TrialStatus::Diverged) => TrialStatus::Diverged,
            Ok(pb::TrialStatus::Failed) => TrialStatus::Failed,
            Ok(pb::TrialStatus::Stopped) => TrialStatus::Stopped,
            _ => {
                return Err(invalid(
                    "status",
                    "must be COMPLETED, DIVERGED, FAILED or STOPPED",
                ))
            }
        };
        let test = match r.test {
            None => None,
            Some(t) => {
                let classes = t.per_class_accuracy.len();
                if classes == 0 || t.confusion.len() != classes * classes {
                    return Err(invalid(
                        "test.confusion",
                        &format!(
                            "{} counts for {classes} classes (needs classes squared)",
                            t.confusion.len()
                        ),
                    ));
                }
                Some(TestMetrics {
                    loss: t.loss,
                    accuracy: t.accuracy,
                    binary_accuracy: t.binary_accuracy,
                    per_class_accuracy: t.per_class_accuracy,
                    confusion: t.confusion.chunks(classes).map(<[u64]>::to_vec).collect(),
                    images: t.images,
                    class_names: t.class_names,
                })
            }
        };
        let result = TrialResult {
            status,
            reason: r.reason,
            epochs: r.epochs.into_iter().map(EpochMetrics::from).collect(),
            test,
            best_val_accuracy: r.best_val_accuracy,
            train_images: r.train_images,
            val_images: r.val_images,
            parameters: r.parameters,
            device: r.device,
            seconds: r.seconds,
            notes: r.notes,
            diverged_epoch: r.diverged_epoch,
            resumed_from_epoch: r.resumed_from_epoch,
            provenance: r.provenance.map(|p| Provenance {
                semantics: p.semantics,
                worker_version: p.worker_version,
                libtorch_version: p.libtorch_version,
                device_name: p.device_name,
                threads: p.threads,
                started_unix_ms: p.started_unix_ms,
                finished_unix_ms: p.finished_unix_ms,
                dataset_fingerprint: p.dataset_fingerprint,
            }),
        };
        result.validate()?;
        Ok(result)
    }
}

/// Reads the shared worker token from `file`, or else from `$SWEEP_TOKEN`. Never from the
/// command line, where `ps` would show it to every user of the machine.
pub fn read_token(file: Option<&std::path::Path>) -> Result<String, String> {
    read_token_as(file, "SWEEP_TOKEN", "worker token", "")
}

/// Shortest token accepted, worker or admin: a guessable token is a door left open.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Reads a token (`what`: "worker token", "admin token") from `file`, or else from `$env`;
/// `hint` follows the message when neither is given. Trimmed; an empty token, or one shorter
/// than [`MIN_TOKEN_CHARS`], is refused. The one rule for both kinds of token, on both sides.
pub fn read_token_as(
    file: Option<&std::path::Path>,
    env: &str,
    what: &str,
    hint: &str,
) -> Result<String, String> {
    let token = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read token file {}: {e}", f.display()))?,
        None => std::env::var(env)
            .map_err(|_| format!("no {what}: set {env} or pass --token-file FILE{hint}"))?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    let n = token.chars().count();
    if n < MIN_TOKEN_CHARS {
        return Err(format!(
            "the {what} is too short ({n} < {MIN_TOKEN_CHARS} characters; for example `openssl rand -hex 32` makes one)"
        ));
    }
    Ok(token)
}

/// Chunk size of checkpoint and model streams (requests are limited to 4 MiB).
pub const CHUNK_BYTES: usize = 1 << 20;

/// `bytes` as the chunks of a SaveCheckpoint, LoadCheckpoint or ExportModel stream, `chunk`
/// bytes each: the first carries `header`'s fields (lease, epoch, size, checksum, kind), the
/// others only data. An empty file is one chunk with the header.
pub fn artifact_chunks(
    bytes: &[u8],
    chunk: usize,
    header: pb::CheckpointChunk,
) -> Vec<pb::CheckpointChunk> {
    let mut pieces = bytes.chunks(chunk.max(1));
    let first = pb::CheckpointChunk {
        data: pieces.next().unwrap_or_default().to_vec(),
        ..header
    };
    std::iter::once(first)
        .chain(pieces.map(|c| pb::CheckpointChunk {
            data: c.to_vec(),
            ..Default::default()
        }))
        .collect()
}

/// Why a streamed artifact (a chunk stream as [`artifact_chunks`] makes) was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{}", .0.message())]
    Stream(tonic::Status),
    #[error("{size} bytes is more than the {limit} accepted")]
    TooLarge { size: u64, limit: u64 },
    #[error("more than the {size} bytes announced")]
    Overrun { size: u64 },
    #[error("it arrived as {got} bytes with SHA-256 {got_sha}, not {size} bytes with {sha}")]
    Mismatch {
        got: u64,
        got_sha: String,
        size: u64,
        sha: String,
    },
}

/// Collects a chunk stream whose first chunk announces the size (at most `limit`) and the
/// SHA-256; the bytes must be exactly those. Memory never exceeds the announced size.
pub async fn receive_artifact(
    chunks: &mut tonic::Streaming<pb::CheckpointChunk>,
    limit: u64,
) -> Result<Vec<u8>, ArtifactError> {
    let mut bytes = Vec::new();
    let mut announced: Option<(u64, String)> = None;
    while let Some(c) = chunks.message().await.map_err(ArtifactError::Stream)? {
        let (size, _) = announced.get_or_insert((c.size, c.sha256));
        let size = *size;
        if size > limit {
            return Err(ArtifactError::TooLarge { size, limit });
        }
        if bytes.len() as u64 + c.data.len() as u64 > size {
            return Err(ArtifactError::Overrun { size });
        }
        bytes.extend_from_slice(&c.data);
    }
    let (size, sha) = announced.unwrap_or_default();
    let got_sha = crate::sha256_hex(&bytes);
    if bytes.len() as u64 != size || got_sha != sha {
        return Err(ArtifactError::Mismatch {
            got: bytes.len() as u64,
            got_sha,
            size,
            sha,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_chunks_carry_the_header_once_and_every_byte_in_order() {
        let header = pb::CheckpointChunk {
            epoch: 3,
            size: 2500,
            sha256: "ab".into(),
            ..Default::default()
        };
        let bytes: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let chunks = artifact_chunks(&bytes, 1000, header.clone());
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            (chunks[0].epoch, chunks[0].size, chunks[0].sha256.as_str()),
            (3, 2500, "ab")
        );
        assert!(chunks[1..]
            .iter()
            .all(|c| c.size == 0 && c.sha256.is_empty()));
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(joined, bytes);
        let empty = artifact_chunks(&[], 1000, header);
        assert_eq!(
            (empty.len(), empty[0].epoch, empty[0].data.len()),
            (1, 3, 0)
        );
    }

    #[test]
    fn metrics_round_trip_through_the_wire_type() {
        let m = EpochMetrics {
            epoch: 3,
            train_loss: 1.5,
            train_accuracy: 0.4,
            val_loss: Some(1.6),
            val_accuracy: None,
            train_binary_accuracy: Some(0.9),
            val_binary_accuracy: None,
            lr: 0.01,
            seconds: 2.5,
            images_per_sec: 100.0,
        };
        assert_eq!(EpochMetrics::from(pb::EpochMetrics::from(&m)), m);
    }

    pub(crate) fn completed() -> TrialResult {
        TrialResult::builder()
            .epochs(vec![EpochMetrics {
                epoch: 1,
                train_loss: 2.2946,
                train_accuracy: 0.11147540983606559,
                val_loss: Some(2.25),
                val_accuracy: Some(0.1),
                train_binary_accuracy: None,
                val_binary_accuracy: None,
                lr: 0.0005,
                seconds: 1.0,
                images_per_sec: 100.0,
            }])
            .test(TestMetrics {
                loss: 2.2,
                accuracy: 0.5,
                binary_accuracy: None,
                per_class_accuracy: vec![0.5, 0.5],
                confusion: vec![vec![1, 1], vec![1, 1]],
                images: 4,
                class_names: vec!["a".into(), "b".into()],
            })
            .best_val_accuracy(0.1)
            .images(10, 2)
            .parameters(5)
            .seconds(2.0)
            .provenance(Provenance {
                semantics: crate::TRAINER_SEMANTICS,
                worker_version: "0.1.0".into(),
                libtorch_version: "2.11.0+cu130".into(),
                device_name: "Intel(R) Xeon(R)".into(),
                threads: 2,
                started_unix_ms: 1_700_000_000_000,
                finished_unix_ms: 1_700_000_002_000,
                dataset_fingerprint: "ab".repeat(32),
            })
            .build()
    }

    #[test]
    fn results_cross_the_wire_and_json_bit_for_bit() {
        let mut r = completed();
        // Values the default serde_json parser used to re-round (one in ten, found by the
        // Python client): each must come back with the same bits.
        let tricky = [
            0.11147540983606559,
            0.1 + 0.2,
            1.0 / 3.0,
            5e-324,
            0.9999999999999999,
        ];
        for (i, v) in tricky.into_iter().enumerate() {
            r.epochs[0].train_accuracy = v;
            r.seconds = v * 7.0;
            let back = TrialResult::try_from(pb::TrialResult::from(&r)).unwrap();
            assert_eq!(back, r, "value {i}");
            let json = serde_json::to_string(&back).unwrap();
            let again: TrialResult = serde_json::from_str(&json).unwrap();
            assert_eq!(
                again.epochs[0].train_accuracy.to_bits(),
                v.to_bits(),
                "{json}"
            );
            assert_eq!(serde_json::to_string(&again).unwrap(), json);
        }
    }

    #[test]
    fn impossible_results_are_refused_naming_the_field() {
        type Change = Box<dyn Fn(&mut TrialResult)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "epochs[0].train_accuracy",
                Box::new(|r| r.epochs[0].train_accuracy = -0.5),
            ),
            (
                "epochs[0].val_accuracy",
                Box::new(|r| r.epochs[0].val_accuracy = Some(1.7)),
            ),
            (
                "epochs[0].val_loss",
                Box::new(|r| r.epochs[0].val_loss = Some(f64::NAN)),
            ),
            (
                "epochs[0].train_loss",
                Box::new(|r| r.epochs[0].train_loss = f64::MAX),
            ),
            ("epochs[0].lr", Box::new(|r| r.epochs[0].lr = f64::INFINITY)),
            ("epochs[0].epoch", Box::new(|r| r.epochs[0].epoch = 0)),
            (
                "epochs[0].epoch",
                Box::new(|r| r.epochs[0].epoch = u32::MAX),
            ),
            (
                "test.accuracy",
                Box::new(|r| r.test.as_mut().unwrap().accuracy = 1e308),
            ),
            (
                "test.confusion",
                Box::new(|r| r.test.as_mut().unwrap().images = 5),
            ),
            ("test", Box::new(|r| r.status = TrialStatus::Failed)),
            ("test", Box::new(|r| r.test = None)),
            (
                "diverged_epoch",
                Box::new(|r| {
                    r.status = TrialStatus::Diverged;
                    r.test = None;
                }),
            ),
            ("diverged_epoch", Box::new(|r| r.diverged_epoch = Some(3))),
            (
                "reason",
                Box::new(|r| {
                    r.status = TrialStatus::Failed;
                    r.test = None;
                }),
            ),
            (
                "best_val_accuracy",
                Box::new(|r| r.best_val_accuracy = Some(2.0)),
            ),
            ("seconds", Box::new(|r| r.seconds = -1.0)),
            ("notes[0]", Box::new(|r| r.notes = vec!["x".repeat(5000)])),
            (
                "provenance.finished_unix_ms",
                Box::new(|r| r.provenance.as_mut().unwrap().finished_unix_ms = 0),
            ),
            (
                "provenance.device_name",
                Box::new(|r| r.provenance.as_mut().unwrap().device_name = "x".repeat(5000)),
            ),
        ];
        assert!(completed().validate().is_ok());
        for (field, change) in cases {
            let mut r = completed();
            change(&mut r);
            let e = TrialResult::try_from(pb::TrialResult::from(&r)).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let mut wire = pb::TrialResult::from(&completed());
        wire.status = 0;
        assert_eq!(
            TrialResult::try_from(wire.clone()).unwrap_err().field,
            "status"
        );
        wire.status = pb::TrialStatus::Completed as i32;
        wire.test.as_mut().unwrap().confusion.pop();
        assert_eq!(
            TrialResult::try_from(wire).unwrap_err().field,
            "test.confusion"
        );
    }

    #[test]
    fn token_from_file_is_trimmed_and_must_not_be_empty_or_short() {
        let dir = std::env::temp_dir().join(format!("token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "0123456789abcdef\n").unwrap();
        assert_eq!(read_token(Some(&f)).unwrap(), "0123456789abcdef");
        std::fs::write(&f, "  \n").unwrap();
        assert!(read_token(Some(&f)).unwrap_err().contains("empty"));
        // One rule for both kinds: a 1-character token is refused as an admin token is.
        for (what, env) in [
            ("worker token", "SWEEP_TOKEN"),
            ("admin token", "SWEEP_ADMIN_TOKEN"),
        ] {
            std::fs::write(&f, "x\n").unwrap();
            let e = read_token_as(Some(&f), env, what, "").unwrap_err();
            assert_eq!(
                e,
                format!("the {what} is too short (1 < 16 characters; for example `openssl rand -hex 32` makes one)")
            );
        }
        assert!(read_token(Some(&dir.join("missing")))
            .unwrap_err()
            .contains("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
