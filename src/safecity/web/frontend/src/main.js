// Command-centre entry point.
import "maplibre-gl/dist/maplibre-gl.css";
import "./style.css";
import { start } from "./app.js";

start(document.getElementById("app"));
