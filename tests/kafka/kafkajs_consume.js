// kafkajs 2.2.4 consumer-group read-back against a Keel cluster; driven by test_kafkajs.py.
// Usage: node kafkajs_consume.js <bootstrap host:port,...> <topic> <count> <groupId>
// Subscribes from the beginning, runs until <count> messages arrived (or 120 s), commits, and
// prints one JSON object on its last line: {records: {partition: [[offset, key, value]...]}}.
'use strict'
const { Kafka, logLevel } = require('kafkajs')

async function main() {
  const [bootstrap, topic, countArg, groupId] = process.argv.slice(2)
  const count = Number(countArg)
  const kafka = new Kafka({
    clientId: 'keel-kafkajs-consumer', brokers: bootstrap.split(','), logLevel: logLevel.WARN,
  })
  const consumer = kafka.consumer({ groupId, sessionTimeout: 30000 })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  const records = {}
  let n = 0
  let finish
  const done = new Promise(resolve => { finish = resolve })
  const timer = setTimeout(() => finish(), 120000)
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      (records[partition] = records[partition] || []).push(
        [Number(message.offset), message.key && message.key.toString(), message.value.toString()])
      if (++n >= count) finish()
    },
  })
  await done
  clearTimeout(timer)
  await consumer.disconnect()
  console.log(JSON.stringify({ records, count: n }))
}

main().catch(e => {
  console.error(`kafkajs_consume failed: ${e && e.stack ? e.stack : e}`)
  process.exit(1)
})
