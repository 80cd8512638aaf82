/// <reference lib="dom" />
// The operator's dashboard: entry point (bundled into dist/main.js by build.ts).
import { render } from "preact";
import { App } from "./app.tsx";
import "uplot/dist/uPlot.min.css";
import "./style.css";

render(<App />, document.getElementById("app")!);
