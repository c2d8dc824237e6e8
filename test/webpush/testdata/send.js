// send.js is the application server of the interop test: it reads one JSON
// request on stdin and answers on stdout with what the npm web-push
// library makes of it. web-push's sendNotification speaks only HTTPS, so
// the Go test sends the request itself.
//
//   {"generateVAPIDKeys": true}
//     -> {"publicKey": "...", "privateKey": "..."}
//   {"subscription": {...}, "payload": "...", "options": {...}}
//     -> {"method", "endpoint", "headers": {...}, "body": "<base64>"}
//
// options are web-push's own (TTL, topic, urgency, contentEncoding,
// vapidDetails).
'use strict';
const webpush = require('web-push');

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const req = JSON.parse(input);
  let out;
  if (req.generateVAPIDKeys) {
    out = webpush.generateVAPIDKeys();
  } else {
    const d = webpush.generateRequestDetails(req.subscription, req.payload, req.options);
    const headers = {};
    for (const [k, v] of Object.entries(d.headers)) headers[k] = String(v);
    out = {
      method: d.method,
      endpoint: d.endpoint,
      headers,
      body: d.body ? Buffer.from(d.body).toString('base64') : '',
    };
  }
  process.stdout.write(JSON.stringify(out));
});
