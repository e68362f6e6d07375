use aegis_domain::BBox;

/// Draws a 3-pixel box outline into packed RGB24 and encodes the image as JPEG.
pub fn encode_snapshot(
    rgb: &[u8],
    width: u32,
    height: u32,
    bbox: &BBox,
    quality: u8,
) -> Result<Vec<u8>, String> {
    let mut img = rgb.to_vec();
    let (w, h) = (width as i64, height as i64);
    let clamp_x = |v: f32| (v as i64).clamp(0, w - 1);
    let clamp_y = |v: f32| (v as i64).clamp(0, h - 1);
    let (x1, y1, x2, y2) = (
        clamp_x(bbox.x1),
        clamp_y(bbox.y1),
        clamp_x(bbox.x2),
        clamp_y(bbox.y2),
    );
    let mut paint = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            let i = ((y * w + x) * 3) as usize;
            img[i..i + 3].copy_from_slice(&[255, 64, 0]);
        }
    };
    for t in 0..3 {
        for x in x1..=x2 {
            paint(x, y1 + t);
            paint(x, y2 - t);
        }
        for y in y1..=y2 {
            paint(x1 + t, y);
            paint(x2 - t, y);
        }
    }
    let mut out = Vec::with_capacity(img.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(
            &img,
            width as u16,
            height as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produces_a_jpeg_with_the_box_drawn() {
        let rgb = vec![0u8; 64 * 48 * 3];
        let jpeg = encode_snapshot(&rgb, 64, 48, &BBox::new(10.0, 10.0, 30.0, 40.0), 90).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG SOI marker");
        assert!(encode_snapshot(&rgb, 64, 48, &BBox::new(-50.0, -5.0, 500.0, 500.0), 90).is_ok());
    }
}
