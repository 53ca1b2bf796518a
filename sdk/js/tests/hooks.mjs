// Node module hooks for testing plugins outside the component: `quiver:plugin/host@0.1.0`
// becomes a stub that records log calls in globalThis.quiverLog, a plugin's `./quiver.js`
// resolves to the kit, and .js files load as ES modules.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const KIT = new URL('../kit/quiver.js', import.meta.url).href;
const HOST = 'quiver-test:host';

export async function resolve(specifier, context, next) {
  if (specifier.startsWith('quiver:plugin/host')) return { url: HOST, shortCircuit: true };
  if (specifier === './quiver.js' && context.parentURL?.startsWith('file:')) {
    const local = new URL(specifier, context.parentURL);
    if (!existsSync(fileURLToPath(local))) return { url: KIT, shortCircuit: true };
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (url === HOST) {
    return {
      format: 'module',
      shortCircuit: true,
      source: 'export function log(level, message) { (globalThis.quiverLog ??= []).push([level, message]); }',
    };
  }
  if (url.startsWith('file:') && url.endsWith('.js')) return next(url, { ...context, format: 'module' });
  return next(url, context);
}
