// Image -> model input, as training, evaluation and serving compute it: the
// formula of kc_keras/dataloaders/image_decoding.py (decode_and_resize; its
// module docstring). The browser decodes the file (JPEG EXIF orientation
// applied, palettes and tRNS expanded) to 8-bit colour c and alpha a, used
// as v / 255. With the model's background b (the run's
// task.data.alpha_background, written by web_demo_lib into config.json),
// each pixel becomes, in float:
//   C = 3: o = a * c + (1 - a) * b              (grey files: c = (g, g, g))
//   C = 1: o = a * Y(c) + (1 - a) * Y(b)        Y = 0.299 r + 0.587 g + 0.114 b
// (no rounding to 8 bits; Y(g, g, g) = g up to float rounding). Opaque
// images skip the blend.
// Then o is resized to S x S with an antialiased bilinear (triangle) kernel
// whose support widens with the downscale factor, and clipped to [0, 1].
// Returns a Float32Array [S, S, C]. Not reproduced: 16-bit PNGs (the page
// sees 8 bits, training keeps 16).

export const MAX_IMAGE_PIXELS = 64_000_000;  // as export/tflite_demo_lib.py
export const MAX_FILE_BYTES = 100 * 1024 * 1024;

// image_decoding.DEFAULT_ALPHA_BACKGROUND and LUMA_WEIGHTS.
export const DEFAULT_BACKGROUND = Object.freeze([1, 1, 1]);
export const LUMA_WEIGHTS = Object.freeze([0.299, 0.587, 0.114]);

export class InputError extends Error {}

function u32be(b, i) { return ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3]; }
function u16be(b, i) { return (b[i] << 8) + b[i + 1]; }
function u16le(b, i) { return b[i] + (b[i + 1] << 8); }
function i32le(b, i) { return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24); }

// Width and height from a PNG, JPEG, GIF or BMP header, read before any
// pixel is decoded (so a huge image is refused without allocating it);
// null for other formats, which the browser's decoder then judges.
export function headerSize(bytes) {
  const b = bytes;
  if (b.length >= 24 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) {
    return {format: 'png', width: u32be(b, 16), height: u32be(b, 20)};
  }
  if (b.length >= 10 && b[0] === 0x47 && b[1] === 0x49 && b[2] === 0x46) {
    return {format: 'gif', width: u16le(b, 6), height: u16le(b, 8)};
  }
  if (b.length >= 26 && b[0] === 0x42 && b[1] === 0x4d) {
    return {format: 'bmp', width: Math.abs(i32le(b, 18)), height: Math.abs(i32le(b, 22))};
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let i = 2;
    while (i + 9 < b.length) {
      if (b[i] !== 0xff) { i += 1; continue; }
      const marker = b[i + 1];
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0xff) { i += (marker === 0xff ? 1 : 2); continue; }
      const length = u16be(b, i + 2);
      const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
      if (isSof) return {format: 'jpeg', width: u16be(b, i + 7), height: u16be(b, i + 5)};
      i += 2 + length;
    }
    return {format: 'jpeg', width: 0, height: 0};
  }
  return null;
}

// Raw RGBA bytes of a decoded image, with `opaque` (every alpha 255).
// createImageBitmap applies a JPEG's EXIF orientation (imageOrientation
// 'from-image', as training does). A 2D canvas stores premultiplied
// alpha in 8 bits, which loses colour precision of semi-transparent pixels
// (a * c after the blend can be off by up to 1/255) and all colour of
// fully transparent ones; for images with transparency WebCodecs'
// ImageDecoder with premultiplyAlpha 'none' gives the stored c and a
// exactly, where the browser has it (the canvas pixels otherwise).
async function decodeRgba(blob, name) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {imageOrientation: 'from-image', premultiplyAlpha: 'none',
                                            colorSpaceConversion: 'none'});
  } catch (e) {
    throw new InputError(`${name}: not an image this page can decode (${e.message || e})`);
  }
  const {width, height} = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d', {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  let data = context.getImageData(0, 0, width, height, {colorSpace: 'srgb'}).data;
  let translucent = false;
  for (let i = 3; i < data.length; i += 4) {
    if (data[i] !== 255) { translucent = true; break; }
  }
  if (translucent && typeof ImageDecoder !== 'undefined' && blob.type) {
    try {
      const decoder = new ImageDecoder({data: await blob.arrayBuffer(), type: blob.type,
                                        premultiplyAlpha: 'none', colorSpaceConversion: 'none'});
      const {image} = await decoder.decode();
      // The decoder's own layout keeps the stored colour; a conversion
      // (copyTo with a format) premultiplies it away.
      const order = {RGBA: [0, 1, 2], RGBX: [0, 1, 2], BGRA: [2, 1, 0], BGRX: [2, 1, 0]}[image.format];
      const native = new Uint8Array(image.allocationSize());
      const [{offset, stride}] = await image.copyTo(native);
      const sameSize = image.codedWidth === width && image.codedHeight === height;
      const format = image.format;
      image.close();
      decoder.close();
      if (!order || !sameSize) throw new Error(`frame format ${format}`);
      const raw = new Uint8ClampedArray(width * height * 4);
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const from = offset + y * stride + 4 * x, to = 4 * (y * width + x);
          raw[to] = native[from + order[0]];
          raw[to + 1] = native[from + order[1]];
          raw[to + 2] = native[from + order[2]];
          raw[to + 3] = native[from + 3];
        }
      }
      data = raw;
    } catch (e) {
      console.warn('ImageDecoder unavailable for this image; using the canvas pixels', e);
    }
  }
  return {data, width, height, opaque: !translucent};
}

// Weights of an antialiased bilinear resize of `inSize` to `outSize`
// (TF's ScaleAndTranslate with the triangle kernel = PIL's BILINEAR):
// for output i, sample = (i + 0.5) * inSize / outSize; the kernel is
// stretched by max(inSize / outSize, 1); taps outside the image are
// dropped and the rest renormalized.
export function resizeWeights(inSize, outSize) {
  const scale = inSize / outSize;
  const kernelScale = Math.max(scale, 1);
  const spans = [];
  for (let i = 0; i < outSize; i++) {
    const sample = (i + 0.5) * scale;
    const start = Math.max(0, Math.ceil(sample - kernelScale - 0.5));
    const end = Math.min(inSize - 1, Math.floor(sample + kernelScale - 0.5));
    const weights = [];
    let total = 0;
    for (let x = start; x <= end; x++) {
      const w = Math.max(0, 1 - Math.abs((x + 0.5 - sample) / kernelScale));
      weights.push(w);
      total += w;
    }
    spans.push({start, weights: weights.map((w) => (total > 0 ? w / total : 0))});
  }
  return spans;
}

// float planes [H, W] per channel -> resized [S, S, C], clipped to [0, 1].
export function resizePlanes(planes, width, height, size) {
  const columns = resizeWeights(width, size);
  const rows = resizeWeights(height, size);
  const channels = planes.length;
  const out = new Float32Array(size * size * channels);
  const tmp = new Float32Array(height * size);
  for (let c = 0; c < channels; c++) {
    const plane = planes[c];
    for (let y = 0; y < height; y++) {
      for (let i = 0; i < size; i++) {
        const {start, weights} = columns[i];
        let sum = 0;
        for (let k = 0; k < weights.length; k++) sum += weights[k] * plane[y * width + start + k];
        tmp[y * size + i] = sum;
      }
    }
    for (let j = 0; j < size; j++) {
      const {start, weights} = rows[j];
      for (let i = 0; i < size; i++) {
        let sum = 0;
        for (let k = 0; k < weights.length; k++) sum += weights[k] * tmp[(start + k) * size + i];
        out[(j * size + i) * channels + c] = Math.min(1, Math.max(0, sum));
      }
    }
  }
  return out;
}

// RGBA bytes -> float planes in [0, 1] of o (the formula above): RGB, or
// the BT.601 luma Y for one channel, composited onto `background` (r, g, b)
// unless every pixel is opaque. Computed in double precision, stored as
// float32 (training computes in float32: they differ by ~1e-7).
export function rgbaToPlanes(data, width, height, channels, background = DEFAULT_BACKGROUND,
                             opaque = undefined) {
  const n = width * height;
  if (opaque === undefined) {
    opaque = true;
    for (let i = 3; i < data.length; i += 4) {
      if (data[i] !== 255) { opaque = false; break; }
    }
  }
  const [wr, wg, wb] = LUMA_WEIGHTS;
  if (channels === 3) {
    const planes = [new Float32Array(n), new Float32Array(n), new Float32Array(n)];
    for (let p = 0; p < n; p++) {
      const a = data[4 * p + 3] / 255;
      for (let c = 0; c < 3; c++) {
        const v = data[4 * p + c] / 255;
        planes[c][p] = opaque ? v : a * v + (1 - a) * background[c];
      }
    }
    return planes;
  }
  const backgroundY = wr * background[0] + wg * background[1] + wb * background[2];
  const grey = new Float32Array(n);
  for (let p = 0; p < n; p++) {
    const y = (wr * data[4 * p] + wg * data[4 * p + 1] + wb * data[4 * p + 2]) / 255;
    const a = data[4 * p + 3] / 255;
    grey[p] = opaque ? y : a * y + (1 - a) * backgroundY;
  }
  return [grey];
}

// A File/Blob -> {tensor: Float32Array [S, S, C], width, height}; `background`
// is the model's alpha_background (r, g, b) in [0, 1].
export async function preprocessBlob(blob, size, channels, name = blob.name || 'image',
                                     background = DEFAULT_BACKGROUND) {
  if (blob.size > MAX_FILE_BYTES) {
    throw new InputError(`${name}: ${(blob.size / 1048576).toFixed(1)} MB is larger than this page accepts (${MAX_FILE_BYTES / 1048576} MB)`);
  }
  const head = new Uint8Array(await blob.slice(0, 65536).arrayBuffer());
  const header = headerSize(head);
  if (header && header.width * header.height > MAX_IMAGE_PIXELS) {
    throw new InputError(`${name}: ${header.width} x ${header.height} pixels is more than this page decodes (${MAX_IMAGE_PIXELS.toLocaleString('en')} pixels)`);
  }
  const {data, width, height, opaque} = await decodeRgba(blob, name);
  if (width * height > MAX_IMAGE_PIXELS) {
    throw new InputError(`${name}: ${width} x ${height} pixels is more than this page decodes (${MAX_IMAGE_PIXELS.toLocaleString('en')} pixels)`);
  }
  const planes = rgbaToPlanes(data, width, height, channels, background, opaque);
  return {tensor: resizePlanes(planes, width, height, size), width, height};
}

// A video frame or canvas (camera) -> tensor; the frame is already decoded
// (and opaque: a camera frame has no transparency).
export function preprocessCanvasSource(source, width, height, size, channels,
                                       background = DEFAULT_BACKGROUND) {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d', {willReadFrequently: true});
  context.drawImage(source, 0, 0, width, height);
  const {data} = context.getImageData(0, 0, width, height);
  return resizePlanes(rgbaToPlanes(data, width, height, channels, background), width, height,
                      size);
}
