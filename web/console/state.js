// What the pages share: the names of the apps the credential sees.

import { call } from './api.js';

export const appNames = new Map(); // app key -> name

// loadApps reads the apps the credential sees (all of them for the admin,
// its own for an app) and returns them.
export async function loadApps() {
  const { apps } = await call('GET', '/v1/apps');
  for (const a of apps) appNames.set(a.app_key, a.name);
  return apps;
}
