// ONNX Runtime's side of `make bench`: an inference configuration of tools/bench.c, same output.
//
//   node tools/bench_ort.js MODEL.onnx CONFIG THREADS
//   node tools/bench_ort.js version         the package's version (exit 1: not installed)
//
// CONFIG: infer<size>b<batch>[_effb0], e.g. infer224b8. One session, intraOpNumThreads =
// THREADS, every graph optimisation, sequential execution; the input is ready in memory, as
// tools/bench.c's. Times are medians after warm-up, with tools/bench.c's stopping rule.
// onnxruntime-node is looked for in $ORT_NODE_MODULES (default: third_party/onnxruntime/
// node_modules, where `make ort-setup` installs it). ORT_PROFILE=PREFIX also writes ORT's
// per-node profile, PREFIX_<date>.json (a Chrome trace: events of cat "Node" with
// args.op_name and dur in us; each node then carries some 10 us of profiling). Prints lines
//   RESULT <config> threads=<t> rate=<x> unit=img/s gflops=0 peak=0 rss_mb=<m> mode=ort
'use strict';
const path = require('path');

const modules = process.env.ORT_NODE_MODULES ||
    path.join(__dirname, '..', 'third_party', 'onnxruntime', 'node_modules');
let ort;
try {
  ort = require(path.join(modules, 'onnxruntime-node'));
} catch (e) {
  console.error(`bench_ort.js: no onnxruntime-node in ${modules} (make ort-setup installs it)`);
  process.exit(1);
}

function seconds(from) { return Number(process.hrtime.bigint() - from) / 1e9; }

function median(xs) {
  const s = xs.slice().sort((a, b) => a - b), m = s.length;
  return m % 2 ? s[(m - 1) / 2] : (s[m / 2 - 1] + s[m / 2]) / 2;
}

async function main() {
  const [model, config, threadArg] = process.argv.slice(2);
  if (model === 'version' && !config) {
    console.log(require(path.join(modules, 'onnxruntime-node', 'package.json')).version);
    return;
  }
  const shape = /^infer(\d+)b(\d+)(_effb0)?$/.exec(config || '');
  const threads = parseInt(threadArg, 10);
  if (!model || !shape || !(threads >= 1)) {
    console.error('usage: bench_ort.js MODEL.onnx infer<size>b<batch>[_effb0] THREADS');
    process.exit(2);
  }
  const size = +shape[1], batch = +shape[2];
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    ...(process.env.ORT_PROFILE ? {enableProfiling: true, profileFilePrefix: process.env.ORT_PROFILE}
                                : {})});
  const count = batch * 3 * size * size, data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = ((i * 7919) % 4001) / 1000 - 2; /* [-2, 2] */
  const feeds = {[session.inputNames[0]]: new ort.Tensor('float32', data, [batch, 3, size, size])};
  for (let i = 0; i < 3; i++) await session.run(feeds); /* warm-up */
  const times = [], start = process.hrtime.bigint();
  while (times.length < 50 && (times.length < 3 || seconds(start) < 1.5)) {
    if (times.length && seconds(start) > 6) break;
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    times.push(seconds(t0));
  }
  const rate = batch / median(times), rss = Math.round(process.resourceUsage().maxRSS / 1024);
  console.log(`${config.padEnd(28)} threads=${threads} ${rate.toFixed(2).padStart(9)} img/s` +
              `  rss ${rss} MB (onnxruntime)`);
  console.log(`RESULT ${config} threads=${threads} rate=${rate.toFixed(4)} unit=img/s gflops=0 ` +
              `peak=0 rss_mb=${rss} mode=ort`);
}

main().catch((e) => { console.error(`bench_ort.js: ${e.message}`); process.exit(1); });
