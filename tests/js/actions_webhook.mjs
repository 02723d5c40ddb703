// Sends events to a webhook URL exactly as Segment's Webhooks (Actions) destination does with
// batching on (segmentio/action-destinations, packages/destination-actions/src/destinations/
// webhook): the body is JSON.stringify of the array of events, and X-Signature is the hex
// HMAC-SHA1 of JSON.stringify of the FIRST event only, with the shared secret.
//
// Input on stdin, JSON: {"url", "method", "secret", "batches": [[event, ...], ...]}; the events
// pass through JSON.parse and JSON.stringify as they do inside Segment.
// Output on stdout, JSON: [{"status", "body"}, ...], one per batch.
import { createHmac } from 'node:crypto'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const { url, method, secret, batches } = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const results = []
for (const batch of batches) {
  const headers = { 'Content-Type': 'application/json', 'User-Agent': 'Segment (Actions)' }
  if (secret) {
    headers['X-Signature'] = createHmac('sha1', secret)
      .update(JSON.stringify(batch[0]), 'utf8')
      .digest('hex')
  }
  const response = await fetch(url, { method, headers, body: JSON.stringify(batch) })
  const text = await response.text()
  let body = text
  try { body = JSON.parse(text) } catch {}
  results.push({ status: response.status, body })
}
process.stdout.write(JSON.stringify(results))
