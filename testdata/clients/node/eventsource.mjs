// Reads a stream with the npm eventsource package and prints, one JSON line
// each, every event it dispatches ("message" and the types given after the
// URL) and every reconnection, until it has printed COUNT events.
//
//   node eventsource.mjs URL COUNT [TYPE...]
import { EventSource } from 'eventsource'

const [url, count, ...types] = process.argv.slice(2)
let left = Number(count)
let opens = 0
const es = new EventSource(url)
const print = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
es.onopen = () => print({ open: ++opens })
const onEvent = (e) => {
  print({ type: e.type, data: e.data, id: e.lastEventId })
  if (--left === 0) {
    es.close()
  }
}
es.onmessage = onEvent
for (const t of types) {
  es.addEventListener(t, onEvent)
}
