// Builds booking.js into a component of the `jobber` world in sdk/wit/, through the
// componentize-js node API (the `jco componentize` command line is not used: it failed on
// this project's paths with "failed to get path metadata").
// Usage: node build.mjs <output.wasm>
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const output = resolve(process.argv[2] ?? 'booking.wasm');

const { component } = await componentize({
  sourcePath: resolve(here, 'booking.js'),
  witPath: resolve(here, '../../sdk/wit'),
  worldName: 'jobber',
  // The host links WASI p2 but not wasi:http: a jobber has no network.
  disableFeatures: ['http', 'fetch-event'],
});

await mkdir(dirname(output), { recursive: true });
const staging = `${output}.partial`;
await writeFile(staging, component);
await rename(staging, output);
console.log(`${output}: ${component.length} bytes`);
