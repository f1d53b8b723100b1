//! The one border between wire types and domain types.

use crate::pb;
use crate::EpochMetrics;

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

/// Reads the shared worker token from `file`, or else from `$SWEEP_TOKEN`. Never from the
/// command line, where `ps` would show it to every user of the machine.
pub fn read_token(file: Option<&std::path::Path>) -> Result<String, String> {
    let token = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read token file {}: {e}", f.display()))?,
        None => std::env::var("SWEEP_TOKEN").map_err(|_| {
            "no worker token: set SWEEP_TOKEN or pass --token-file FILE".to_string()
        })?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err("the worker token is empty".into());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn token_from_file_is_trimmed_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "abc\n").unwrap();
        assert_eq!(read_token(Some(&f)).unwrap(), "abc");
        std::fs::write(&f, "  \n").unwrap();
        assert!(read_token(Some(&f)).unwrap_err().contains("empty"));
        assert!(read_token(Some(&dir.join("missing")))
            .unwrap_err()
            .contains("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
