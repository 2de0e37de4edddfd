// Spoken replies: 16-bit PCM chunks from the page, played in order, off the main thread.
// The page posts {pcm: ArrayBuffer (Int16, at sourceRate)} to queue audio and {flush: true}
// to stop at once (barge-in): the queue is dropped within one render quantum (128 samples).
// It posts {played, queued, flushed} a few times a second, so the page (and its tests) can
// see that it really plays.
class Pcm16Player extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.step = (opts.sourceRate || sampleRate) / sampleRate; // source samples per output one
    this.queue = []; // Float32Array chunks at the source rate
    this.head = 0; // read position (fractional) in queue[0]
    this.played = 0; // source samples played
    this.flushed = 0;
    this.sinceReport = 0;
    this.port.onmessage = (event) => {
      const message = event.data;
      if (message.flush) {
        this.queue = [];
        this.head = 0;
        this.flushed += 1;
        this.report();
      } else if (message.pcm) {
        const ints = new Int16Array(message.pcm);
        const floats = new Float32Array(ints.length);
        for (let i = 0; i < ints.length; i++) floats[i] = ints[i] / 32768;
        this.queue.push(floats);
      }
    };
  }

  queued() {
    let n = -Math.floor(this.head);
    for (const chunk of this.queue) n += chunk.length;
    return Math.max(0, n);
  }

  report() {
    this.port.postMessage({ played: this.played, queued: this.queued(), flushed: this.flushed });
    this.sinceReport = 0;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    for (let i = 0; i < out.length; i++) {
      const chunk = this.queue[0];
      if (!chunk) {
        out[i] = 0;
        continue;
      }
      const at = Math.floor(this.head);
      out[i] = chunk[at];
      const before = at;
      this.head += this.step;
      this.played += Math.floor(this.head) - before;
      if (this.head >= chunk.length) {
        this.queue.shift();
        this.head -= chunk.length;
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 10) this.report();
    return true;
  }
}

registerProcessor("pcm16-player", Pcm16Player);
