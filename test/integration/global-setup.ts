import type { TestProject } from 'vitest/node';
import { BACKENDS, type BackendName, resolveBackend, type ResolvedBackend } from './backends.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The URL of each backend found, or '' when it is missing (its tests then skip, loudly). */
    readonly backends: Readonly<Record<BackendName, string>>;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const names = Object.keys(BACKENDS) as BackendName[];
  const resolved: ResolvedBackend[] = await Promise.all(names.map((name) => resolveBackend(name)));
  const missing = resolved.filter((backend) => backend.url === undefined);
  for (const backend of resolved) {
    if (backend.url !== undefined) console.log(`[sluice] ${backend.name}: using the ${backend.source} server`);
  }
  if (missing.length > 0) {
    const list = missing.map((backend) => `${backend.name} (set ${BACKENDS[backend.name].env})`).join(', ');
    const banner = `\n${'!'.repeat(78)}\n[sluice] NO SERVER FOUND FOR: ${list}.\n` +
      `[sluice] Their integration tests are SKIPPED. Start them with \`docker compose up -d\`\n` +
      `[sluice] or point the variables at a server.\n${'!'.repeat(78)}\n`;
    if (process.env.CI === 'true') throw new Error(`${banner}[sluice] CI=true: a missing backend fails the run.`);
    console.warn(banner);
  }
  project.provide(
    'backends',
    Object.fromEntries(resolved.map((backend) => [backend.name, backend.url ?? ''])) as Record<BackendName, string>,
  );
  return async () => {
    await Promise.all(resolved.map((backend) => backend.stop?.()));
  };
}
