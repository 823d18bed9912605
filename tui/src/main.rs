//! The `meridian` binary: flags, logging to a file, the terminal, and the event loop.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture, Event, EventStream,
    KeyEventKind,
};
use crossterm::execute;
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use futures_util::StreamExt;
use meridian_tui::app::{App, AppConfig, Screen};
use meridian_tui::config::{self, Dirs, ProcessEnv, Settings, Start, State};
use meridian_tui::keymap::Keymap;
use meridian_tui::login::{LoginForm, Picker};
use meridian_tui::{clipboard, ssh, theme, worker};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// The terminal dashboard for OpenStack clouds.
#[derive(Parser, Debug)]
#[command(name = "meridian", version)]
struct Args {
    /// The cloud from clouds.yaml to use (default: OS_CLOUD, then OS_* variables, then a picker).
    #[arg(long, env = "OS_CLOUD")]
    os_cloud: Option<String>,
    /// Theme name: dark, light, high-contrast or one of yours (config dir's themes/).
    #[arg(long)]
    theme: Option<String>,
    /// Do not use the cloud's push stream even if it has one: poll what is in transition.
    #[arg(long)]
    poll: bool,
    /// Log file (default: meridian.log in the state dir). Logs never go to the screen.
    #[arg(long)]
    log_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args = Args::parse();
    let env = ProcessEnv;
    let dirs = Dirs::discover(&env);
    let log_file = args.log_file.clone().unwrap_or_else(|| dirs.log_file());
    init_logging(&log_file)?;

    let settings = Settings::load(&dirs.settings_file())?;
    let keymap = Keymap::with_overrides(&settings.keys)?;
    let state = State::load(&dirs.state_file());
    let (themes, problems) = theme::load_all(&dirs.themes_dir());
    for p in &problems {
        tracing::warn!("{p}");
    }
    let wanted = args.theme.clone().or(settings.theme.clone()).or(state.theme.clone());
    let theme_idx = match &wanted {
        Some(name) => themes
            .iter()
            .position(|t| &t.name == name)
            .with_context(|| format!("no theme named {name} (built in: dark, light, high-contrast)"))?,
        None => 0,
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    let clouds = config::load_clouds(&cwd, &env)?;
    let start = config::resolve_start(args.os_cloud.as_deref(), &clouds, &env, &state)?;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let (ui_tx, ui_rx) = tokio::sync::mpsc::unbounded_channel();
        let (visible_tx, visible_rx) = tokio::sync::watch::channel(true);
        let tx = worker::spawn_watching(ui_tx, !args.poll, visible_rx);
        let cfg = AppConfig {
            keymap,
            themes,
            theme: theme_idx,
            state_path: Some(dirs.state_file()),
            state: state.clone(),
            clouds: clouds.values().cloned().collect(),
            instances_visible: Some(visible_tx),
        };
        let mut app = App::new(tx, Screen::Main, cfg);
        match start {
            Start::Login(p) => {
                app.screen = Screen::Login(LoginForm::new(&p));
                app.login(*p);
            }
            Start::Pick(list) => app.screen = Screen::Picker(Picker::new(list)),
            Start::Form => {
                let p = config::Profile {
                    auth_url: state.last_auth_url.clone().unwrap_or_default(),
                    username: state.last_username.clone().unwrap_or_default(),
                    user_domain: "Default".into(),
                    project_domain: "Default".into(),
                    ..config::Profile::default()
                };
                app.screen = Screen::Login(LoginForm::new(&p));
            }
        }
        run(app, ui_rx, started).await
    })
}

fn init_logging(path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_TUI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::sync::Mutex::new(file)).init();
    Ok(())
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

async fn run(
    mut app: App,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<worker::Response>,
    started: Instant,
) -> anyhow::Result<()> {
    // Whatever happens, the user gets their terminal back.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        tracing::error!("panic: {info}");
        default_hook(info);
    }));
    enable_raw_mode()?;
    execute!(std::io::stdout(), EnterAlternateScreen, EnableMouseCapture, EnableBracketedPaste)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    let result = event_loop(&mut app, &mut terminal, &mut rx, started).await;
    restore_terminal();
    result
}

async fn event_loop(
    app: &mut App,
    terminal: &mut Terminal<CrosstermBackend<std::io::Stdout>>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<worker::Response>,
    started: Instant,
) -> anyhow::Result<()> {
    let mut events = EventStream::new();
    // For the benchmark: when the first frame with data is on screen.
    let mut first_frame_file = std::env::var_os("MERIDIAN_FIRST_FRAME_FILE").map(PathBuf::from);
    let mut dirty = true;
    loop {
        if dirty {
            terminal.draw(|f| app.draw(f))?;
            dirty = false;
            // OSC 52 copy: the app only records the text; the escape is written here.
            if let Some(text) = app.take_clipboard()
                && let Err(e) = clipboard::write(terminal.backend_mut(), &text)
            {
                tracing::warn!(error = %e, "cannot write the clipboard escape");
            }
            if app.has_data()
                && let Some(path) = first_frame_file.take()
            {
                let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let mut f = std::fs::File::create(&path)?;
                writeln!(f, "{} {}", started.elapsed().as_micros(), unix.as_micros())?;
            }
        }
        if app.quit {
            return Ok(());
        }
        // `x`: ssh gets the terminal, the dashboard gets it back when ssh exits.
        if let Some(mut call) = app.take_ssh() {
            // Dropping the event stream stops crossterm reading stdin, so every key goes to ssh.
            drop(events);
            call.find_key(&ssh::default_keys_dir());
            let result = run_ssh(&call).await;
            enable_raw_mode()?;
            execute!(std::io::stdout(), EnterAlternateScreen, EnableMouseCapture, EnableBracketedPaste)?;
            terminal.clear()?;
            events = EventStream::new();
            tracing::info!(?result, "ssh ended; the dashboard reads the terminal again");
            app.ssh_finished(&call, result);
            dirty = true;
            continue;
        }
        // Event-driven: sleep until input, a response, or the next animation step if any.
        let wake = app.next_wake();
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => {
                    // Never the key itself: it may be part of a password.
                    tracing::debug!(modifiers = ?k.modifiers, "key event");
                    app.on_key(k);
                    dirty = true;
                }
                Some(Ok(Event::Mouse(m))) => { app.on_mouse(m); dirty = true; }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(Event::Paste(text))) => { app.on_paste(&text); dirty = true; }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            resp = rx.recv() => {
                let Some(resp) = resp else { return Ok(()) };
                app.on_response(resp);
                // Draw once for a burst of responses (a stream catching up).
                while let Ok(more) = rx.try_recv() {
                    app.on_response(more);
                }
                dirty = true;
            }
            _ = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600))), if wake.is_some() => {
                app.on_tick();
                dirty = true;
            }
        }
    }
}

/// Runs the system ssh on the normal screen in cooked mode; its exit code (`None`: a signal).
async fn run_ssh(call: &ssh::SshCall) -> Result<Option<i32>, String> {
    restore_terminal();
    // Ctrl-C while ssh connects (before it makes the terminal raw) is SIGINT to the whole
    // foreground group: ssh should stop, the dashboard should not. Once tokio handles SIGINT the
    // default "terminate" is gone for good, which is harmless: in raw mode Ctrl-C is a key.
    let _keep_running = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| tracing::warn!(error = %e, "cannot handle SIGINT"));
    println!("meridian: {}  (the dashboard comes back when ssh exits)", call.display());
    tracing::info!(command = %call.display(), "running ssh");
    let status = tokio::process::Command::new("ssh").args(call.args()).status().await.map_err(|e| e.to_string())?;
    Ok(status.code())
}
