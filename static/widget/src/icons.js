// SVG paths (24×24 viewBox) of the panel's icons; embed.js draws them (ctx.icon).
export const ICONS = {
  minimise: "M7.4 8.6 12 13.2l4.6-4.6L18 10l-6 6-6-6z",
  more: "M12 8a2 2 0 1 0 0-4 2 2 0 0 0 0 4zm0 2a2 2 0 1 0 0 4 2 2 0 0 0 0-4zm0 6a2 2 0 1 0 0 4 2 2 0 0 0 0-4z",
  send: "M2 21 23 12 2 3v7l15 2-15 2z",
  // Drawn as is for "helpful", rotated 180° (CSS: .th+.th) for "not helpful".
  thumb: "M1 21h4V9H1v12zm22-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.5-1.1L14.2 1 7.6 7.6C7.2 8 7 8.4 7 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7c.1-.3.2-.5.2-.8v-2z",
};
