// What goes on the title card for each job type, and how it is wrapped to fit a 1080-wide card.

export type JobType = "doubt" | "topic_short" | "daily_ca";

export interface CardText {
  /** Small heading above the body, e.g. "DOUBT". */
  label: string;
  /** Main text, not yet wrapped. */
  body: string;
}

export interface CardLayout {
  fontSize: number;
  lineSpacing: number;
  lines: string[];
}

const MAX_HEADLINES_SHOWN = 8;

/** Picks the card's text from the job: the doubt's question, the topic, or the date and headlines. */
export function cardTextForJob(jobType: JobType, payload: Record<string, unknown>): CardText {
  switch (jobType) {
    case "doubt":
      return { label: "DOUBT", body: String(payload.question ?? "") };
    case "topic_short":
      return { label: "TOPIC", body: String(payload.topic ?? "") };
    case "daily_ca": {
      const headlines = Array.isArray(payload.headlines) ? payload.headlines.map(String) : [];
      const shown = headlines.slice(0, MAX_HEADLINES_SHOWN).map((h) => `• ${h}`);
      if (headlines.length > MAX_HEADLINES_SHOWN) {
        shown.push(`+${headlines.length - MAX_HEADLINES_SHOWN} more`);
      }
      return {
        label: `CURRENT AFFAIRS · ${payload.date ?? ""}`,
        body: shown.length ? shown.join("\n") : "Today's current affairs",
      };
    }
  }
}

/**
 * Wraps text to at most `maxChars` per line, keeping explicit line breaks and splitting words
 * longer than a line. Control characters are flattened so drawtext never draws a tofu box.
 */
export function wrapText(text: string, maxChars: number): string[] {
  const lines: string[] = [];
  for (const paragraph of text.replace(/\r\n?/g, "\n").split("\n")) {
    // deno-lint-ignore no-control-regex
    const words = paragraph.replace(/[\u0000-\u001f\u007f]/g, " ").split(" ").filter(Boolean);
    let line = "";
    for (let word of words) {
      while (word.length > maxChars) {
        if (line) lines.push(line);
        line = "";
        lines.push(word.slice(0, maxChars));
        word = word.slice(maxChars);
      }
      if (!word) continue;
      if (line && line.length + 1 + word.length > maxChars) {
        lines.push(line);
        line = word;
      } else {
        line = line ? `${line} ${word}` : word;
      }
    }
    if (line) lines.push(line);
  }
  return lines;
}

// Body area: 920 px wide, ~1300 px tall. DejaVu Sans Bold averages ~0.62 em per character.
const BODY_WIDTH_PX = 920;
const BODY_HEIGHT_PX = 1300;
const FONT_SIZES = [64, 52, 42, 34];

/** Chooses the largest font size at which the body fits; truncates with "…" at the smallest. */
export function layoutBody(body: string): CardLayout {
  for (const fontSize of FONT_SIZES) {
    const lineSpacing = Math.round(fontSize * 0.35);
    const maxChars = Math.floor(BODY_WIDTH_PX / (fontSize * 0.62));
    const maxLines = Math.floor(BODY_HEIGHT_PX / (fontSize + lineSpacing));
    const lines = wrapText(body, maxChars);
    const smallest = fontSize === FONT_SIZES[FONT_SIZES.length - 1];
    if (lines.length <= maxLines) return { fontSize, lineSpacing, lines };
    if (smallest) {
      const kept = lines.slice(0, maxLines);
      kept[maxLines - 1] = `${kept[maxLines - 1].slice(0, maxChars - 1)}…`;
      return { fontSize, lineSpacing, lines: kept };
    }
  }
  throw new Error("unreachable");
}
