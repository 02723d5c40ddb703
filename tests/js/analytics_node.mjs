// Publishes events with Segment's own Node library, @segment/analytics-node, used as its docs
// say: `new Analytics({ writeKey, host })`, one call per event, then `closeAndFlush()`.
//
// Input on stdin, JSON: {"host", "writeKey", "calls": [{"method": "track", "args": {...}}, ...],
// "options": {...extra Analytics settings}}.
// Output on stdout, JSON: {"requests": [{"url", "status"}...], "errors": [message, ...]}.
import { Analytics } from '@segment/analytics-node'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const { host, writeKey, calls, options } = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const analytics = new Analytics({ writeKey, host, ...(options || {}) })
const requests = []
const errors = []
analytics.on('http_request', (request) => requests.push({ url: request.url }))
analytics.on('error', (err) => errors.push(String(err?.reason ?? err?.message ?? err)))

for (const { method, args } of calls) {
  analytics[method](args)
}
await analytics.closeAndFlush({ timeout: 20000 })
process.stdout.write(JSON.stringify({ requests, errors }))
