//! Using an exported model: `worker eval` (its test accuracy again, from the files alone) and
//! `worker predict` (the top classes of PNG or JPEG images).

use crate::artifacts::export::{self, Loaded};
use crate::data::Dataset;
use crate::train::metrics::{self, Confusion, Tally};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Serialize)]
pub struct Evaluation {
    pub trial_id: String,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub images: u64,
    /// What the trial measured when it was trained, for comparison.
    pub stored_test_accuracy: Option<f64>,
    pub per_class_accuracy: Vec<f64>,
}

/// Images per forward pass.
const BATCH: usize = 1000;

/// Re-computes the test metrics of a loaded model ([`export::load`]) on the dataset in
/// `data`, with the trial's own test selection (`test_images`) and preprocessing.
/// `data`: the dataset's directory (`imagefolder:DIR` for an image folder); default for
/// CIFAR-10: $CIFAR10_DATA, then ./data.
pub fn eval(m: &Loaded, data: Option<&Path>) -> Result<Evaluation, String> {
    let device = m.vs.device();
    let spec = &m.info.trial;
    let dir = crate::data::find_data_for(data, spec.dataset).map_err(|e| e.to_string())?;
    let dataset = Dataset::open(&dir, spec.dataset, spec.image_size, spec.train_batches)
        .map_err(|e| e.to_string())?;
    if dataset.classes.len() != m.info.classes.len() {
        return Err(format!(
            "the model knows {} classes, {} has {}",
            m.info.classes.len(),
            dir.display(),
            dataset.classes.len()
        ));
    }
    let n = spec
        .test_images
        .map_or(dataset.test.len(), |c| (c as usize).min(dataset.test.len()));
    let _guard = tch::no_grad_guard();
    let mut tally = Tally::new(spec.loss, device);
    let mut confusion = Confusion::new(device, dataset.classes.len());
    let mut start = 0;
    while start < n {
        let len = BATCH.min(n - start);
        let bytes = dataset.test.image_bytes;
        let rows = &dataset.test.images[start * bytes..(start + len) * bytes];
        let x = m.inputs(rows, len)?;
        let y = Tensor::from_slice(&dataset.test.labels[start..start + len])
            .to_kind(Kind::Int64)
            .to_device(device);
        let logits = m.model.forward_t(&x, false);
        tally.add(&metrics::loss(&logits, &y, spec.loss, 0.0), &logits, &y);
        confusion.add(&logits, &y);
        start += len;
    }
    let (loss, accuracy, _) = tally.finish();
    Ok(Evaluation {
        trial_id: m.info.trial_id.clone(),
        test_accuracy: accuracy,
        test_loss: loss,
        images: n as u64,
        stored_test_accuracy: m.info.test_accuracy,
        per_class_accuracy: metrics::per_class_accuracy(&confusion.matrix()),
    })
}

#[derive(Debug, Serialize)]
pub struct Prediction {
    pub image: PathBuf,
    pub top: Vec<ClassProbability>,
}

#[derive(Debug, Serialize)]
pub struct ClassProbability {
    pub class: String,
    pub probability: f64,
}

/// An image file as a row of R, G and B planes, resized to `side` x `side` exactly as image
/// folders are decoded for training.
pub fn image_row(path: &Path, side: usize) -> Result<Vec<u8>, String> {
    let mut row = vec![0u8; 3 * side * side];
    crate::data::imagefolder::decode_into(path, side, &mut row)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(row)
}

/// The `top` most likely classes of each image, by the model's softmax.
pub fn predict(
    model: &Path,
    images: &[PathBuf],
    top: usize,
    device: Device,
) -> Result<Vec<Prediction>, String> {
    let m: Loaded = export::load(model, device)?;
    let mut rows = Vec::new();
    for path in images {
        rows.extend(image_row(path, m.side())?);
    }
    let _guard = tch::no_grad_guard();
    let x = m.inputs(&rows, images.len())?;
    let probs = m
        .model
        .forward_t(&x, false)
        .softmax(-1, Kind::Float)
        .to_device(Device::Cpu);
    let classes = &m.info.classes;
    let k = top.clamp(1, classes.len());
    Ok(images
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let mut p: Vec<(usize, f64)> = (0..classes.len())
                .map(|c| (c, probs.double_value(&[i as i64, c as i64])))
                .collect();
            p.sort_by(|a, b| b.1.total_cmp(&a.1));
            Prediction {
                image: path.clone(),
                top: p
                    .into_iter()
                    .take(k)
                    .map(|(c, probability)| ClassProbability {
                        class: classes[c].clone(),
                        probability,
                    })
                    .collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testdata::write_small_binary;
    use crate::train::{run_until, Control, Event};
    use sweep_proto::{ColorMode, Model, TrialSpec};

    /// A trained model written to files gives back, from the files alone, the test accuracy
    /// the trial measured (grayscale, standard normalisation: both need the stored
    /// preprocessing), and classifies a PNG of a test image as the model does in `eval`.
    #[test]
    fn an_exported_model_reproduces_its_test_accuracy_and_predicts_images() {
        let _lock = crate::test_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        write_small_binary(dir.path(), 24, 30);
        let data = Dataset::load(dir.path(), 5).unwrap();
        let spec = TrialSpec {
            model: Model::SeedCnn,
            color: ColorMode::Grayscale,
            epochs: 1,
            batch_size: 16,
            ..TrialSpec::default()
        };
        let control = Control {
            export_model: true,
            ..Control::default()
        };
        let mut file = None;
        let r = run_until(&spec, &data, Device::Cpu, &control, &mut |e| {
            if let Event::Model { bytes, .. } = e {
                file = Some(bytes.to_vec());
            }
        });
        let out = dir.path().join("model");
        let info = export::write_dir(&out, &file.expect("a model")).unwrap();
        assert_eq!(info.trial, spec);
        assert_eq!(info.input, [1, 32, 32]);
        let loaded = export::load(&out, Device::Cpu).unwrap();
        let e = eval(&loaded, Some(dir.path())).unwrap();
        let stored = r.test.unwrap();
        assert_eq!(
            (e.test_accuracy, e.images),
            (stored.accuracy, stored.images)
        );
        assert_eq!(e.stored_test_accuracy, Some(stored.accuracy));

        // The first test image as a PNG: the same top class as the model gives it in eval.
        let row = &data.test.images[..3072];
        let png = dir.path().join("first.png");
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let at = (y * 32 + x) as usize;
            image::Rgb([row[at], row[1024 + at], row[2048 + at]])
        });
        img.save(&png).unwrap();
        assert_eq!(image_row(&png, 32).unwrap(), row);
        let p = predict(&out, std::slice::from_ref(&png), 3, Device::Cpu).unwrap();
        let m = export::load(&out, Device::Cpu).unwrap();
        let logits = m.model.forward_t(&m.inputs(row, 1).unwrap(), false);
        let best = logits.argmax(-1, false).int64_value(&[0]) as usize;
        assert_eq!(p[0].top[0].class, data.classes[best]);
        assert_eq!(p[0].top.len(), 3);
        let sum: f64 = p[0].top.iter().map(|c| c.probability).sum();
        assert!(sum > 0.0 && sum <= 1.0 + 1e-6);
        // Not a model file, not an image: errors naming the file.
        let err = export::load(&png, Device::Cpu).err().unwrap();
        assert!(err.contains("first.png"), "{err}");
        let err = predict(&out, &[out.join("model.json")], 1, Device::Cpu).unwrap_err();
        assert!(err.contains("model.json"), "{err}");
    }
}
