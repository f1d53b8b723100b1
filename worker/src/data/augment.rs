//! Batched augmentation on the training device, on float images in 0..255 (before
//! normalisation, so pad-crop pads with black like torchvision's `RandomCrop(padding=4)`).
//! All randomness comes from libtorch's generator, which `tch::manual_seed` seeds per trial.

use sweep_proto::Augment;
use tch::{Kind, Tensor};

/// grid_sampler modes (ATen's enum values).
const BILINEAR: i64 = 0;
const BORDER: i64 = 1;

/// Applies the enabled augmentations to a `[B, C, H, W]` float batch.
pub fn apply(x: &Tensor, a: &Augment) -> Tensor {
    let mut x = x.shallow_clone();
    if a.shift > 0.0 || a.rotation > 0.0 {
        x = shift_rotate(&x, a.shift, a.rotation);
    }
    if a.pad_crop > 0 {
        x = pad_crop(&x, a.pad_crop as i64);
    }
    if a.flip {
        x = flip(&x);
    }
    if a.cutout > 0 {
        x = cutout(&x, a.cutout as i64);
    }
    x
}

/// Blacks out a `size`x`size` square at a random centre in every image (DeVries & Taylor
/// 2017: the centre may lie near an edge, so part of the square can fall outside).
pub fn cutout(x: &Tensor, size: i64) -> Tensor {
    let (b, _, h, w) = x.size4().expect("cutout takes a [B, C, H, W] batch");
    let dev = x.device();
    let cy = Tensor::randint(h, [b, 1, 1, 1], (Kind::Int64, dev));
    let cx = Tensor::randint(w, [b, 1, 1, 1], (Kind::Int64, dev));
    let lo = size / 2;
    let hi = size - lo;
    let rows = Tensor::arange(h, (Kind::Int64, dev)).view([1, 1, h, 1]);
    let cols = Tensor::arange(w, (Kind::Int64, dev)).view([1, 1, 1, w]);
    let inside =
        |v: &Tensor, c: &Tensor| v.ge_tensor(&(c - lo)).logical_and(&v.lt_tensor(&(c + hi)));
    let hole = inside(&rows, &cy).logical_and(&inside(&cols, &cx));
    x.masked_fill(&hole, 0.0)
}

/// Mirrors each image left-right with probability 1/2.
pub fn flip(x: &Tensor) -> Tensor {
    let b = x.size()[0];
    let mask = Tensor::rand([b], (Kind::Float, x.device()))
        .lt(0.5)
        .view([b, 1, 1, 1]);
    x.flip([3]).where_self(&mask, x)
}

/// Zero-pads by `pad` pixels and takes a random 32x32 window per image, with two gathers.
pub fn pad_crop(x: &Tensor, pad: i64) -> Tensor {
    let (b, c, h, w) = x.size4().expect("pad_crop takes a [B, C, H, W] batch");
    let dev = x.device();
    let padded = x.constant_pad_nd([pad, pad, pad, pad]);
    let wp = w + 2 * pad;
    let dy = Tensor::randint(2 * pad + 1, [b, 1], (Kind::Int64, dev));
    let dx = Tensor::randint(2 * pad + 1, [b, 1], (Kind::Int64, dev));
    let rows = (dy + Tensor::arange(h, (Kind::Int64, dev)).view([1, h]))
        .view([b, 1, h, 1])
        .expand([b, c, h, wp], false);
    let cols = (dx + Tensor::arange(w, (Kind::Int64, dev)).view([1, w]))
        .view([b, 1, 1, w])
        .expand([b, c, h, w], false);
    padded.gather(2, &rows, false).gather(3, &cols, false)
}

/// Random translation up to `shift` of the image size and rotation up to `degrees`, in one
/// bilinear resampling with edge pixels repeated (Keras' default `fill_mode="nearest"`).
pub fn shift_rotate(x: &Tensor, shift: f64, degrees: f64) -> Tensor {
    let (b, c, h, w) = x.size4().expect("shift_rotate takes a [B, C, H, W] batch");
    let opts = (Kind::Float, x.device());
    let symmetric = |scale: f64| (Tensor::rand([b], opts) * 2.0 - 1.0) * scale;
    let angle = symmetric(degrees.to_radians());
    // affine_grid works in [-1, 1] coordinates, where the image is 2 units wide.
    let tx = symmetric(2.0 * shift);
    let ty = symmetric(2.0 * shift);
    let (cos, sin) = (angle.cos(), angle.sin());
    let theta = Tensor::stack(&[&cos, &(-&sin), &tx, &sin, &cos, &ty], 1).view([b, 2, 3]);
    let grid = Tensor::affine_grid_generator(&theta, [b, c, h, w], false);
    x.grid_sampler(&grid, BILINEAR, BORDER, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Distinct, left-right asymmetric images: pixel value encodes (image, channel, row, col).
    fn batch(b: i64) -> Tensor {
        Tensor::arange(b * 3 * 32 * 32, (Kind::Float, Device::Cpu))
            .remainder(251.0)
            .view([b, 3, 32, 32])
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.allclose(b, 1e-6, 1e-6, false)
    }

    #[test]
    fn cutout_blacks_out_one_square_per_image() {
        let _lock = crate::test_rng_lock();
        tch::manual_seed(3);
        let x = Tensor::full([64, 3, 32, 32], 200.0, (Kind::Float, Device::Cpu));
        let y = cutout(&x, 8);
        assert_eq!(y.size(), x.size());
        for i in 0..64 {
            let img = y.get(i);
            // Same square in every channel; at most 8x8, at least 4x4 (centre on the border).
            let zeros = img.eq(0.0).sum(Kind::Int64).int64_value(&[]);
            assert_eq!(zeros % 3, 0, "image {i}");
            let per_channel = zeros / 3;
            assert!(
                (16..=64).contains(&per_channel),
                "image {i}: {per_channel} zero pixels"
            );
            let rest = img.ne(0.0).to_kind(Kind::Float);
            assert_eq!(
                (img * &rest).sum(Kind::Double).double_value(&[]),
                200.0 * rest.sum(Kind::Double).double_value(&[]),
                "pixels outside the square are untouched"
            );
        }
    }

    #[test]
    fn flips_really_flip_about_half() {
        let _lock = crate::test_rng_lock();
        tch::manual_seed(1);
        let x = batch(64);
        let y = flip(&x);
        assert_eq!(y.size(), x.size());
        let mut flipped = 0;
        for i in 0..64 {
            let (xi, yi) = (x.get(i), y.get(i));
            if same(&yi, &xi.flip([2])) {
                flipped += 1;
                // A flipped image's first column is the original's last.
                assert!(same(&yi.select(2, 0), &xi.select(2, 31)));
            } else {
                assert!(same(&yi, &xi), "image {i} is neither itself nor its mirror");
            }
        }
        assert!((16..=48).contains(&flipped), "{flipped} of 64 flipped");
    }

    #[test]
    fn pad_crop_takes_windows_of_the_padded_image() {
        let _lock = crate::test_rng_lock();
        tch::manual_seed(2);
        let x = batch(16) + 1.0; // strictly positive, so padding zeros are recognisable
        let y = pad_crop(&x, 4);
        assert_eq!(y.size(), vec![16, 3, 32, 32]);
        let padded = x.constant_pad_nd([4, 4, 4, 4]);
        let mut moved = 0;
        for i in 0..16 {
            let yi = y.get(i);
            let found = (0..=8)
                .flat_map(|dy| (0..=8).map(move |dx| (dy, dx)))
                .find(|&(dy, dx)| same(&yi, &padded.get(i).narrow(1, dy, 32).narrow(2, dx, 32)));
            let (dy, dx) =
                found.unwrap_or_else(|| panic!("image {i} is not a crop of its padded self"));
            if (dy, dx) != (4, 4) {
                moved += 1;
            }
        }
        assert!(moved >= 8, "only {moved} of 16 crops moved");
    }

    #[test]
    fn shift_rotate_keeps_shape_and_value_range() {
        let _lock = crate::test_rng_lock();
        tch::manual_seed(3);
        let x = batch(8);
        let y = shift_rotate(&x, 0.1, 10.0);
        assert_eq!(y.size(), x.size());
        assert!(y.min().double_value(&[]) >= x.min().double_value(&[]) - 1e-3);
        assert!(y.max().double_value(&[]) <= x.max().double_value(&[]) + 1e-3);
        assert!(!same(&y, &x), "a random shift/rotation changed nothing");
        // No shift and no rotation is the identity (up to float rounding of the grid).
        let id = shift_rotate(&x, 0.0, 0.0);
        assert!(id.allclose(&x, 1e-3, 1e-2, false));
    }

    #[test]
    fn same_seed_same_augmentation() {
        let a = Augment {
            flip: true,
            shift: 0.1,
            pad_crop: 4,
            rotation: 10.0,
            cutout: 8,
        };
        let x = batch(4);
        let _lock = crate::test_rng_lock();
        tch::manual_seed(7);
        let y1 = apply(&x, &a);
        tch::manual_seed(7);
        let y2 = apply(&x, &a);
        assert!(same(&y1, &y2));
        assert!(same(&apply(&x, &Augment::default()), &x));
    }
}
