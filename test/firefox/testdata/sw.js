// The service worker reports every push it receives, decrypted by Firefox,
// to the test server. A push whose text is "unsubscribe" also ends the
// subscription, which Firefox tells the push service with an unregister.
'use strict';
const report = (kind, data) => fetch('/report', {
  method: 'POST',
  headers: {'Content-Type': 'application/json'},
  body: JSON.stringify(Object.assign({kind}, data)),
});

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

self.addEventListener('push', (e) => {
  const text = e.data ? e.data.text() : null;
  e.waitUntil((async () => {
    await report('push', {text});
    if (text === 'unsubscribe') {
      const sub = await self.registration.pushManager.getSubscription();
      const ok = sub ? await sub.unsubscribe() : false;
      await report('unsubscribed', {ok});
    }
  })());
});
