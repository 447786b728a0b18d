// The kc_keras web demo: a Knowledge Concentration student classifying
// images in the page with LiteRT.js (WebAssembly/XNNPACK, or WebGPU where
// the browser has an adapter). Everything is served from this directory:
// config.json (written by `python -m export.web_demo`), models/, samples/,
// vendor/ (the pinned @litertjs packages).

import {loadLiteRt, loadAndCompile, Tensor} from '@litertjs/core';
import {DEFAULT_BACKGROUND, InputError, preprocessBlob, preprocessCanvasSource} from './preprocess.js';

const TOP_K = 5;
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const state = {config: null, model: null, entry: null, labels: [], verticals: [],
               size: 0, channels: 0, background: DEFAULT_BACKGROUND, inputName: '',
               accelerator: '', busy: false};

function setStatus(text, kind = 'info') {
  const status = $('status');
  status.textContent = text;
  status.className = `status ${kind}`;
  document.body.dataset.state = kind;
}

function showError(error) {
  const text = error instanceof InputError ? error.message : `Error: ${error.message || error}`;
  setStatus(text, 'error');
  console.error(error);
}

async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new Error(`${what} (${url}) could not be fetched: ${e.message}`);
  }
  if (!response.ok) throw new Error(`${what} (${url}) could not be fetched: HTTP ${response.status}`);
  return response;
}

async function readLines(url, what) {
  const text = await (await fetchOk(url, what)).text();
  return text.replace(/\n$/, '').split('\n');
}

async function webGpuAdapter() {
  if (!('gpu' in navigator)) return false;
  try {
    return Boolean(await navigator.gpu.requestAdapter());
  } catch (e) {
    return false;
  }
}

async function loadModel(entry) {
  setStatus(`Loading ${entry.name}...`, 'busy');
  $('results').hidden = true;
  if (state.model) {
    state.model.delete();
    state.model = null;
  }
  const started = performance.now();
  const [labels, verticals] = await Promise.all([
    readLines(entry.labels, 'the labels file'), readLines(entry.verticals, 'the verticals file')]);
  const bytes = new Uint8Array(await (await fetchOk(entry.file, 'the model')).arrayBuffer());
  const wanted = params.get('accelerator') || (await webGpuAdapter() ? 'webgpu' : 'wasm');
  let model;
  try {
    model = await loadAndCompile(bytes, {accelerator: wanted});
  } catch (e) {
    throw new Error(`the model ${entry.file} failed to load in LiteRT.js (${e.message || e})`);
  }
  const input = model.getInputDetails()[0];
  const outputs = model.getOutputDetails();
  const logits = outputs.find((o) => o.name === 'logits') || outputs[0];
  const [, height, width, channels] = Array.from(input.shape);
  if (input.dtype !== 'float32' || height !== width || ![1, 3].includes(channels)) {
    model.delete();
    throw new Error(`the model ${entry.file} takes ${input.dtype} [${Array.from(input.shape)}]; this page feeds float32 [1, S, S, 1 or 3]`);
  }
  const classes = logits.shape[logits.shape.length - 1];
  if (labels.length !== classes || verticals.length !== classes) {
    model.delete();
    throw new Error(`the model has ${classes} classes but its labels file has ${labels.length} lines and its verticals file ${verticals.length}`);
  }
  // One run on a blank image: the first call sets up XNNPACK's kernels, and
  // the latency shown per image should be the steady one.
  const blank = new Tensor(new Float32Array(height * width * channels), [1, height, width, channels]);
  try {
    for (const tensor of Object.values(await model.run({[input.name]: blank}))) tensor.delete();
  } catch (e) {
    model.delete();
    throw new Error(`the model ${entry.file} failed to run in LiteRT.js (${e.message || e})`);
  } finally {
    blank.delete();
  }
  // Transparent pixels are composited onto the run's task.data.alpha_background
  // (config.json says where web_demo_lib read it); white for an older config.
  const background = entry.alpha_background || DEFAULT_BACKGROUND;
  if (!entry.alpha_background) console.warn(`config.json gives no alpha_background for ${entry.name}: white`);
  Object.assign(state, {model, entry, labels, verticals, size: height, channels, background,
                        inputName: input.name, logitsName: logits.name,
                        accelerator: wanted === 'webgpu' ? 'WebGPU' : 'WASM (XNNPACK)'});
  const loadMs = performance.now() - started;
  $('model-info').textContent = `${entry.name}: ${(entry.bytes / 1024).toFixed(1)} KB, ` +
      `input ${height} x ${width} x ${channels}, ${classes} classes; loaded in ${loadMs.toFixed(0)} ms ` +
      `on ${state.accelerator}${state.threads ? ', threaded' : ''}; transparency onto ` +
      `(${background.map((v) => Number(v.toFixed(3))).join(', ')})`;
  $('model-info').title = `alpha_background: ${entry.alpha_background_source || 'default (white)'}`;
  document.body.dataset.loadMs = loadMs.toFixed(1);
  setStatus('Ready: pick, drop or photograph an image, or click a sample.', 'ready');
}

function sigmoid(x) { return 1 / (1 + Math.exp(-x)); }

async function classifyTensor(tensorData, source, decodeMs) {
  const {model, size, channels} = state;
  const input = new Tensor(tensorData, [1, size, size, channels]);
  const started = performance.now();
  let outputs;
  try {
    outputs = await model.run({[state.inputName]: input});
  } finally {
    input.delete();
  }
  const latencyMs = performance.now() - started;
  const output = outputs[state.logitsName];
  const logits = Array.from(output.toTypedArray());
  for (const tensor of Object.values(outputs)) tensor.delete();
  // Ranked by logit, ties by class id (numpy's stable argsort of -logits).
  const ids = logits.map((_, i) => i).sort((a, b) => (logits[b] - logits[a]) || (a - b)).slice(0, TOP_K);
  const top = ids.map((id) => ({id, name: state.labels[id], vertical: state.verticals[id],
                               logit: logits[id], score: sigmoid(logits[id])}));
  render(top, source, latencyMs, decodeMs);
  const result = {source, top, latencyMs, decodeMs, logits};
  window.kcDemo.last = result;
  return result;
}

function render(top, source, latencyMs, decodeMs) {
  const body = $('top5');
  body.replaceChildren(...top.map((row, rank) => {
    const tr = document.createElement('tr');
    const cells = [rank + 1, row.name, row.vertical, row.score.toFixed(4)];
    for (const value of cells) {
      const td = document.createElement('td');
      td.textContent = value;
      tr.appendChild(td);
    }
    const bar = document.createElement('td');
    const fill = document.createElement('div');
    fill.className = 'bar';
    fill.style.width = `${Math.round(row.score * 100)}%`;
    bar.appendChild(fill);
    tr.appendChild(bar);
    tr.dataset.classId = row.id;
    return tr;
  }));
  $('source').textContent = source;
  $('latency').textContent = `${latencyMs.toFixed(2)} ms inference (+ ${decodeMs.toFixed(1)} ms decode and resize)`;
  $('accelerator').textContent = state.accelerator;
  $('results').hidden = false;
  setStatus(`Classified ${source}.`, 'done');
}

function preview(blob) {
  const img = $('preview');
  if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.hidden = false;
}

async function classifyBlob(blob, name) {
  if (state.busy) return null;
  if (!state.model) {
    setStatus('No model is loaded: see the message above.', 'error');
    return null;
  }
  state.busy = true;
  try {
    setStatus(`Classifying ${name}...`, 'busy');
    const started = performance.now();
    const {tensor} = await preprocessBlob(blob, state.size, state.channels, name, state.background);
    const decodeMs = performance.now() - started;
    preview(blob);
    return await classifyTensor(tensor, name, decodeMs);
  } catch (e) {
    $('results').hidden = true;
    showError(e);
    return null;
  } finally {
    state.busy = false;
  }
}

async function startCamera() {
  const video = $('camera');
  try {
    if (!navigator.mediaDevices?.getUserMedia) throw new Error('this browser has no camera API (it needs https or localhost)');
    video.srcObject = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
    await video.play();
    video.hidden = false;
    $('snap').hidden = false;
    setStatus('Camera on: press "Classify frame".', 'ready');
  } catch (e) {
    showError(new InputError(`Camera unavailable: ${e.message || e}`));
  }
}

async function snapCamera() {
  const video = $('camera');
  if (!video.videoWidth) return;
  const started = performance.now();
  const tensor = preprocessCanvasSource(video, video.videoWidth, video.videoHeight, state.size, state.channels,
                                        state.background);
  try {
    await classifyTensor(tensor, 'camera frame', performance.now() - started);
  } catch (e) {
    showError(e);
  }
}

function wireInputs() {
  $('file').addEventListener('change', (event) => {
    const file = event.target.files[0];
    if (file) classifyBlob(file, file.name);
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    const file = event.dataTransfer.files[0];
    if (file) classifyBlob(file, file.name);
    else setStatus('Nothing to classify was dropped: drop an image file.', 'error');
  });
  $('camera-button').addEventListener('click', startCamera);
  $('snap').addEventListener('click', snapCamera);
  $('model-select').addEventListener('change', (event) => {
    const entry = state.config.models.find((m) => m.name === event.target.value);
    loadModel(entry).catch(showError);
  });
}

function showSamples(samples) {
  const list = $('samples');
  list.replaceChildren(...samples.map((sample) => {
    const button = document.createElement('button');
    button.className = 'sample';
    button.title = sample.name;
    button.dataset.sample = sample.name;
    const img = document.createElement('img');
    img.src = sample.file;
    img.alt = sample.name;
    button.appendChild(img);
    button.addEventListener('click', async () => {
      try {
        const blob = await (await fetchOk(sample.file, 'the sample')).blob();
        await classifyBlob(blob, sample.name);
      } catch (e) {
        showError(e);
      }
    });
    return button;
  }));
  $('samples-box').hidden = samples.length === 0;
}

async function main() {
  wireInputs();
  try {
    state.config = await (await fetchOk('config.json', 'the demo configuration')).json();
    const {models, samples, skipped} = state.config;
    if (skipped?.length) {
      $('skipped').textContent = 'Not in this page: ' + skipped.map((s) => `${s.name} (${s.reason})`).join('; ');
      $('skipped').hidden = false;
    }
    if (!models.length) throw new Error('the demo has no model LiteRT.js can run (see the build output)');
    const select = $('model-select');
    select.replaceChildren(...models.map((m) => new Option(`${m.name} (${(m.bytes / 1024).toFixed(1)} KB)`, m.name)));
    const entry = models.find((m) => m.name === params.get('model')) || models[0];
    select.value = entry.name;
    showSamples(samples || []);
    setStatus('Loading LiteRT.js...', 'busy');
    const threads = params.get('threads') !== '0' && self.crossOriginIsolated === true;
    state.threads = threads;
    const started = performance.now();
    await loadLiteRt(new URL('vendor/@litertjs/core/wasm/', location.href).href, {threads});
    document.body.dataset.wasmMs = (performance.now() - started).toFixed(1);
    await loadModel(entry);
  } catch (e) {
    showError(e);
  }
}

// For tests and the console: classify a File/Blob, or preprocess one (onto
// the loaded model's background unless one is given).
window.kcDemo = {
  state,
  last: null,
  classifyBlob,
  loadModel: (name) => loadModel(state.config.models.find((m) => m.name === name)),
  preprocess: async (blob, size, channels, background = state.background) =>
    Array.from((await preprocessBlob(blob, size, channels, undefined, background)).tensor),
};

main();
