//! Image preprocessing exactly as `AlignCollate` of deep-text-recognition-benchmark: PIL-style grayscale
//! (ITU-R 601-2 luma, `convert('L')`) or RGB, bicubic resize to the spec's size (or the keep-ratio "PAD"
//! variant: resize to the input height keeping the aspect ratio, at most the input width, then right-pad by
//! replicating the last column), and normalisation `(x / 255 - 0.5) / 0.5` into CHW f32.

use anyhow::{Context, Result};
use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, RgbImage};

use crate::spec::arch::Arch;

/// The input contract of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess {
    pub height: u32,
    pub width: u32,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: u32,
    pub keep_ratio_pad: bool,
}

impl Preprocess {
    pub fn from_arch(arch: &Arch) -> Self {
        Preprocess { height: arch.input.h, width: arch.input.w, channels: arch.input.c, keep_ratio_pad: arch.keep_ratio_pad }
    }

    /// Values per image (`C*H*W`).
    pub fn len(&self) -> usize {
        (self.channels * self.height * self.width) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes PNG/JPEG bytes and writes the normalised CHW tensor into `out` (`len()` values).
    pub fn encoded_into(&self, bytes: &[u8], out: &mut [f32]) -> Result<()> {
        let img = image::load_from_memory(bytes).context("cannot decode image")?;
        self.image_into(&img, out);
        Ok(())
    }

    /// Preprocesses a decoded image into `out` (`len()` values).
    pub fn image_into(&self, img: &DynamicImage, out: &mut [f32]) {
        assert_eq!(out.len(), self.len());
        let planes: Vec<GrayImage> = if self.channels == 1 {
            vec![pil_luma(&img.to_rgb8())]
        } else {
            let rgb = img.to_rgb8();
            (0..3).map(|c| GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| image::Luma([rgb.get_pixel(x, y)[c]]))).collect()
        };
        let (h, w) = (self.height, self.width);
        let target_w = if self.keep_ratio_pad {
            let ratio = img.width() as f64 / img.height().max(1) as f64;
            ((h as f64 * ratio).ceil() as u32).clamp(1, w)
        } else {
            w
        };
        let plane = (h * w) as usize;
        for (c, p) in planes.iter().enumerate() {
            let r = imageops::resize(p, target_w, h, FilterType::CatmullRom);
            let dst = &mut out[c * plane..(c + 1) * plane];
            for y in 0..h {
                for x in 0..w {
                    let sx = x.min(target_w - 1);
                    dst[(y * w + x) as usize] = (r.get_pixel(sx, y)[0] as f32 / 255.0 - 0.5) / 0.5;
                }
            }
        }
    }
}

/// PIL's `convert('L')`: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
pub fn pil_luma(rgb: &RgbImage) -> GrayImage {
    GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let p = rgb.get_pixel(x, y);
        let l = (p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16;
        image::Luma([l as u8])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_matches_pil() {
        // PIL: Image.new('RGB', (1, 1), (200, 100, 50)).convert('L').getpixel((0, 0)) == 124
        let img = RgbImage::from_pixel(1, 1, image::Rgb([200, 100, 50]));
        assert_eq!(pil_luma(&img).get_pixel(0, 0)[0], 124);
    }

    #[test]
    fn normalises_to_minus_one_one_and_pads_by_replication() {
        let p = Preprocess { height: 4, width: 8, channels: 1, keep_ratio_pad: true };
        // A 4x2 image: white then black column; PAD keeps width ceil(4 * 0.5) = 2 and replicates the black column.
        let img = GrayImage::from_fn(2, 4, |x, _| image::Luma([if x == 0 { 255 } else { 0 }]));
        let mut out = vec![0.0; p.len()];
        p.image_into(&DynamicImage::ImageLuma8(img), &mut out);
        assert!((out[0] - 1.0).abs() < 1e-6, "{out:?}");
        assert!(out[1..8].iter().all(|&v| (v + 1.0).abs() < 1e-6), "{out:?}");
    }
}
