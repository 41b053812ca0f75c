//! Driving the system Chromium (Debian's `chromium`) for the browser tests.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use headless_chrome::protocol::cdp::Emulation::SetDeviceMetricsOverride;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// The Chromium binary: `$CHROME`, or the first usual path that exists.
pub fn chromium() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHROME").map(PathBuf::from) {
        return Ok(path);
    }
    for candidate in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        let path = PathBuf::from(candidate);
        if path.exists() {
            return Ok(path);
        }
    }
    bail!("no Chromium found: install Debian's `chromium` package (.ci/run does) or set CHROME")
}

/// A headless browser with a window of the given size.
pub fn launch(width: u32, height: u32) -> anyhow::Result<Browser> {
    Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium()?))
            .headless(true)
            // CI runs as root, where Chromium's sandbox cannot start.
            .sandbox(false)
            .window_size(Some((width, height)))
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| anyhow::anyhow!("launch options: {e}"))?,
    )
}

/// Sets the tab's viewport (headless windows have a minimum width of their
/// own); `mobile` for a phone.
pub fn set_viewport(tab: &Tab, width: u32, height: u32, mobile: bool) -> anyhow::Result<()> {
    tab.call_method(SetDeviceMetricsOverride {
        width,
        height,
        device_scale_factor: if mobile { 2.0 } else { 1.0 },
        mobile,
        scale: None,
        screen_width: None,
        screen_height: None,
        position_x: None,
        position_y: None,
        dont_set_visible_size: None,
        screen_orientation: None,
        viewport: None,
        display_feature: None,
        device_posture: None,
    })?;
    Ok(())
}

/// Evaluates a JavaScript expression and returns its JSON value.
pub fn js(tab: &Tab, expression: &str) -> anyhow::Result<serde_json::Value> {
    let result = tab.evaluate(expression, false)?;
    Ok(result.value.unwrap_or(serde_json::Value::Null))
}

/// Saves a screenshot of the whole page under `tests/artifacts/`.
pub fn screenshot(tab: &Tab, name: &str) -> anyhow::Result<PathBuf> {
    let png = tab.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)?;
    let dir = crate::artifacts_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, png)?;
    Ok(path)
}
