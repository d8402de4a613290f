// kafkajs 2.2.4: two consumers of one group in one process read a topic to the end with commits;
// driven by test_groups.py.
// Usage: node kafkajs_group.js <bootstrap host:port,...> <topic> <groupId> <count>
// Both subscribe from the beginning and commit after every batch (kafkajs's autoCommit with no
// interval or threshold); once <count> distinct offsets arrived (or 150 s) both disconnect, and
// the admin client reads the group's committed offsets (OffsetFetch) and the end offsets.
// Prints one JSON object on its last line:
//   {members: [{assigned: [partition...], records: {partition: [offset...]}}...],
//    committed: [{partition, offset}...], ends: [{partition, high}...]}
'use strict'
const { Kafka, logLevel } = require('kafkajs')

async function main() {
  const [bootstrap, topic, groupId, countArg] = process.argv.slice(2)
  const count = Number(countArg)
  const kafka = new Kafka({
    clientId: 'keel-kafkajs-group', brokers: bootstrap.split(','), logLevel: logLevel.WARN,
  })
  const seen = new Set()
  let finish
  const done = new Promise(resolve => { finish = resolve })
  const timer = setTimeout(() => finish(), 150000)
  const members = []
  const consumers = []
  for (let i = 0; i < 2; i++) {
    const m = { assigned: [], records: {} }
    members.push(m)
    const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 })
    consumer.on(consumer.events.GROUP_JOIN, e => {
      for (const p of (e.payload.memberAssignment[topic] || []))
        if (!m.assigned.includes(p)) m.assigned.push(p)
    })
    consumers.push(consumer)
  }
  await Promise.all(consumers.map(async (consumer, i) => {
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        const m = members[i];
        (m.records[partition] = m.records[partition] || []).push(Number(message.offset))
        seen.add(`${partition}:${message.offset}`)
        if (seen.size >= count) finish()
      },
    })
  }))
  await done
  clearTimeout(timer)
  await new Promise(r => setTimeout(r, 1000)) // the last batches' commits
  await Promise.all(consumers.map(c => c.disconnect()))
  const admin = kafka.admin()
  await admin.connect()
  const fetched = await admin.fetchOffsets({ groupId, topics: [topic] })
  const ends = await admin.fetchTopicOffsets(topic)
  await admin.disconnect()
  const committed = fetched.find(t => t.topic === topic).partitions
    .map(p => ({ partition: p.partition, offset: p.offset }))
  console.log(JSON.stringify({
    members, committed, ends: ends.map(e => ({ partition: e.partition, high: e.high })),
  }))
}

main().catch(e => {
  console.error(`kafkajs_group failed: ${e && e.stack ? e.stack : e}`)
  process.exit(1)
})
