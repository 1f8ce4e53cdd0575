//! A cli-world pod: prints a line a second, forever, like a container's long-running process.
//! `TICKS=n` makes it exit after n lines (to watch restarts and back-off).

fn main() {
    let limit: Option<u64> = std::env::var("TICKS").ok().and_then(|t| t.parse().ok());
    let mut n = 0u64;
    loop {
        n += 1;
        println!("tick {n}");
        if limit.is_some_and(|l| n >= l) {
            std::process::exit(3);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
