// Microphone audio to 16-bit PCM frames at the session's rate, off the main thread.
// The context usually runs at the target rate already (the browser resamples); when it
// cannot, this resamples by linear interpolation.
class Pcm16Writer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.target = opts.targetRate || 16000;
    this.frame = Math.round(this.target * (opts.frameMs || 20) / 1000);
    this.step = sampleRate / this.target; // input samples per output sample
    this.pos = 0; // position in the input stream of the next output sample
    this.prev = 0;
    this.out = new Int16Array(this.frame);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    for (let i = 0; i < input.length; i++) {
      const sample = input[i];
      while (this.pos <= 1) {
        const v = this.prev + (sample - this.prev) * this.pos;
        const clamped = Math.max(-1, Math.min(1, v));
        this.out[this.fill++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
        if (this.fill === this.frame) {
          this.port.postMessage(this.out.buffer, [this.out.buffer]);
          this.out = new Int16Array(this.frame);
          this.fill = 0;
        }
        this.pos += this.step;
      }
      this.pos -= 1;
      this.prev = sample;
    }
    return true;
  }
}

registerProcessor("pcm16-writer", Pcm16Writer);
