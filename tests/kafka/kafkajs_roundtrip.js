// kafkajs 2.2.4 against a Keel cluster; driven by test_kafkajs.py.
// Usage: node kafkajs_roundtrip.js <bootstrap host:port,...> <topic> <partitions> <count>
// Prints one JSON object on its last line: what each step saw.
//
// kafkajs consumers always join a consumer group (kafkajs_consume.js tests that). This script's
// read-back is group-less: kafkajs's own Fetch request and decoder through its cluster and broker
// objects, the code path its consumer uses below the group layer.
'use strict'
const { Kafka, logLevel, CompressionTypes } = require('kafkajs')

async function main() {
  const [bootstrap, topic, partitionsArg, countArg] = process.argv.slice(2)
  const partitions = Number(partitionsArg)
  const count = Number(countArg)
  const out = {}
  const kafka = new Kafka({
    clientId: 'keel-kafkajs-test',
    brokers: bootstrap.split(','),
    logLevel: logLevel.WARN,
    retry: { retries: 8 },
    requestTimeout: 60000,
  })

  const admin = kafka.admin()
  await admin.connect()
  out.created = await admin.createTopics({
    topics: [{ topic, numPartitions: partitions, replicationFactor: 3 }],
    waitForLeaders: true,
    timeout: 30000,
  })
  const md = await admin.fetchTopicMetadata({ topics: [topic] })
  out.metadata = md.topics[0].partitions.map(p => ({
    partition: p.partitionId, leader: p.leader, replicas: p.replicas,
  }))
  out.cluster = await admin.describeCluster()

  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  const acked = []
  const batch = 500
  for (let start = 0; start < count; start += batch) {
    const messages = []
    for (let i = start; i < Math.min(count, start + batch); i++) {
      messages.push({ key: `k${i % 50}`, value: `v-${i}` })
    }
    const compression = start % 1000 === 0 ? CompressionTypes.None : CompressionTypes.GZIP
    const res = await producer.send({ topic, acks: -1, messages, compression })
    // One RecordMetadata per partition: the base offset of this request's batch there.
    for (const r of res) {
      if (r.errorCode !== 0) throw new Error(`produce error ${JSON.stringify(r)}`)
      acked.push({ send: start / batch, partition: r.partition, baseOffset: r.baseOffset })
    }
  }
  await producer.disconnect()
  out.acked = acked

  out.offsets = await admin.fetchTopicOffsets(topic)
  out.offsetsEarliest = await admin.fetchTopicOffsetsByTimestamp(topic, 0)
  await admin.disconnect()

  // Group-less read-back: Fetch from each partition's leader through kafkajs's protocol layer.
  const createCluster = kafka[Object.getOwnPropertySymbols(kafka)
    .find(s => s.description === 'private:Kafka:createCluster')]
  const cluster = createCluster({ allowAutoTopicCreation: false })
  await cluster.connect()
  await cluster.addTargetTopic(topic)
  await cluster.refreshMetadata()
  const records = {}
  for (let p = 0; p < partitions; p++) {
    const high = Number(out.offsets.find(o => o.partition === p).high)
    records[p] = []
    let offset = 0
    let rounds = 0
    while (offset < high) {
      if (++rounds > 1000) throw new Error(`partition ${p}: no progress at offset ${offset}`)
      const leader = cluster.findTopicPartitionMetadata(topic).find(m => m.partitionId === p).leader
      const broker = await cluster.findBroker({ nodeId: String(leader) })
      let resp
      try {
        resp = await broker.fetch({
          replicaId: -1, maxWaitTime: 1000, minBytes: 1, maxBytes: 1 << 20,
          topics: [{ topic, partitions: [{ partition: p, fetchOffset: String(offset), maxBytes: 1 << 20 }] }],
        })
      } catch (e) {
        // Leader balancing may move a leadership after the topic's creation: as a client does,
        // learn the new leader and fetch again.
        if (!e.retriable) throw e
        await new Promise(resolve => setTimeout(resolve, 100))
        await cluster.refreshMetadata()
        continue
      }
      const part = resp.responses[0].partitions[0]
      if (part.errorCode !== 0) throw new Error(`fetch error ${part.errorCode} on partition ${p}`)
      for (const m of part.messages) {
        const o = Number(m.offset)
        if (o < offset) continue  // a batch that starts before the requested offset
        records[p].push([o, m.key && m.key.toString(), m.value && m.value.toString()])
        offset = o + 1
      }
    }
  }
  await cluster.disconnect()
  out.records = records
  console.log(JSON.stringify(out))
}

main().catch(e => {
  console.error(`kafkajs_roundtrip failed: ${e && e.stack ? e.stack : e}`)
  process.exit(1)
})
