// push.js: the npm web-push library as an application server. It reads
// {subscription, payload, ttl, vapid: {subject, publicKey, privateKey}} as
// JSON on stdin, encrypts and VAPID-signs the payload with
// generateRequestDetails, and prints the request to send as JSON:
// {endpoint, method, headers, body} with the body in base64. The Go test
// sends it (sendNotification speaks only HTTPS).
'use strict';
const webpush = require('web-push');

let input = '';
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const req = JSON.parse(input);
  const details = webpush.generateRequestDetails(req.subscription, req.payload, {
    TTL: req.ttl,
    contentEncoding: 'aes128gcm',
    vapidDetails: req.vapid,
  });
  process.stdout.write(JSON.stringify({
    endpoint: details.endpoint,
    method: details.method,
    headers: details.headers,
    body: details.body ? Buffer.from(details.body).toString('base64') : '',
  }));
});
