/*
 * qxl-kms-test: the test guest's user program (PID 1 runs it from /init).
 *
 * Drives the real Linux drm/qxl driver through the plain KMS uAPI, the way a
 * simple compositor would:
 *   - opens /dev/dri/card0 (waits for it to appear),
 *   - picks the first connected connector and its 1024x768 mode (or the
 *     preferred one), creates a 32 bpp dumb buffer, ADDFB + SETCRTC,
 *   - draws a deterministic scene into it (background fill, panels, a
 *     text-like glyph pattern, a window moved across the screen in steps),
 *     and after each step calls DIRTYFB with exactly the damaged rectangles,
 *   - sets a 64x64 ARGB cursor (DRM_IOCTL_MODE_CURSOR with a dumb BO) and
 *     moves it,
 *   - prints progress lines and finally the FNV-1a 64 hash of the final frame,
 *   - keeps the frame on screen for argv[1] seconds (default 0) before exiting.
 *
 * The hash covers the visible pixels as R, G, B bytes, row by row (the X byte
 * of XRGB8888 is not part of it), so a host-side screenshot of the SPICE
 * primary surface (RGB) can be compared with it directly.
 *
 * Self-contained: the few DRM uAPI structures are declared here (they are a
 * stable kernel ABI), so the program builds with any static libc and no
 * libdrm or kernel headers. Build: gcc -static -O2 -o qxl-kms-test qxl-kms-test.c
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---- DRM uAPI (include/uapi/drm/drm.h, drm_mode.h) ---- */
struct drm_mode_card_res {
	uint64_t fb_id_ptr, crtc_id_ptr, connector_id_ptr, encoder_id_ptr;
	uint32_t count_fbs, count_crtcs, count_connectors, count_encoders;
	uint32_t min_width, max_width, min_height, max_height;
};
struct drm_mode_modeinfo {
	uint32_t clock;
	uint16_t hdisplay, hsync_start, hsync_end, htotal, hskew;
	uint16_t vdisplay, vsync_start, vsync_end, vtotal, vscan;
	uint32_t vrefresh, flags, type;
	char name[32];
};
struct drm_mode_crtc {
	uint64_t set_connectors_ptr;
	uint32_t count_connectors, crtc_id, fb_id, x, y, gamma_size, mode_valid;
	struct drm_mode_modeinfo mode;
};
struct drm_mode_get_connector {
	uint64_t encoders_ptr, modes_ptr, props_ptr, prop_values_ptr;
	uint32_t count_modes, count_props, count_encoders, encoder_id;
	uint32_t connector_id, connector_type, connector_type_id, connection;
	uint32_t mm_width, mm_height, subpixel, pad;
};
struct drm_mode_get_encoder {
	uint32_t encoder_id, encoder_type, crtc_id, possible_crtcs, possible_clones;
};
struct drm_mode_fb_cmd {
	uint32_t fb_id, width, height, pitch, bpp, depth, handle;
};
struct drm_clip_rect {
	unsigned short x1, y1, x2, y2;
};
struct drm_mode_fb_dirty_cmd {
	uint32_t fb_id, flags, color, num_clips;
	uint64_t clips_ptr;
};
struct drm_mode_create_dumb {
	uint32_t height, width, bpp, flags, handle, pitch;
	uint64_t size;
};
struct drm_mode_map_dumb {
	uint32_t handle, pad;
	uint64_t offset;
};
struct drm_mode_cursor {
	uint32_t flags, crtc_id;
	int32_t x, y;
	uint32_t width, height, handle;
};

#define DRM_IOWR_(nr, type) _IOWR('d', nr, type)
#define DRM_IOCTL_MODE_GETRESOURCES DRM_IOWR_(0xA0, struct drm_mode_card_res)
#define DRM_IOCTL_MODE_SETCRTC DRM_IOWR_(0xA2, struct drm_mode_crtc)
#define DRM_IOCTL_MODE_CURSOR DRM_IOWR_(0xA3, struct drm_mode_cursor)
#define DRM_IOCTL_MODE_GETENCODER DRM_IOWR_(0xA6, struct drm_mode_get_encoder)
#define DRM_IOCTL_MODE_GETCONNECTOR DRM_IOWR_(0xA7, struct drm_mode_get_connector)
#define DRM_IOCTL_MODE_ADDFB DRM_IOWR_(0xAE, struct drm_mode_fb_cmd)
#define DRM_IOCTL_MODE_DIRTYFB DRM_IOWR_(0xB1, struct drm_mode_fb_dirty_cmd)
#define DRM_IOCTL_MODE_CREATE_DUMB DRM_IOWR_(0xB2, struct drm_mode_create_dumb)
#define DRM_IOCTL_MODE_MAP_DUMB DRM_IOWR_(0xB3, struct drm_mode_map_dumb)
#define DRM_MODE_CONNECTED 1
#define DRM_MODE_TYPE_PREFERRED (1 << 3)
#define DRM_MODE_CURSOR_BO 0x01
#define DRM_MODE_CURSOR_MOVE 0x02

#define MAX_IDS 16
#define MAX_MODES 128
#define STEPS 8

static int fd = -1;
static uint32_t *fb;        /* the mapped dumb buffer */
static uint32_t W, H, PITCH; /* pixels, pixels, bytes */
static uint32_t fb_id;

static void die(const char *what)
{
	printf("qxl-kms-test: FAIL %s: %s\n", what, strerror(errno));
	fflush(stdout);
	exit(1);
}

static int xioctl(unsigned long req, void *arg)
{
	int r;
	do {
		r = ioctl(fd, req, arg);
	} while (r < 0 && (errno == EINTR || errno == EAGAIN));
	return r;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- drawing (all deterministic) ---- */
static void fill(int x0, int y0, int w, int h, uint32_t c)
{
	for (int y = y0; y < y0 + h; y++) {
		if (y < 0 || (uint32_t)y >= H)
			continue;
		uint32_t *row = (uint32_t *)((uint8_t *)fb + (size_t)y * PITCH);
		for (int x = x0; x < x0 + w; x++)
			if (x >= 0 && (uint32_t)x < W)
				row[x] = c;
	}
}

/* The desktop background at (x, y): a vertical gradient with a grid. */
static uint32_t background(int x, int y)
{
	if (x % 64 == 0 || y % 64 == 0)
		return 0x00304878;
	uint32_t b = 0x60 + (uint32_t)(y * 0x60 / (int)H);
	return 0x00102000 | (b & 0xff);
}

static void paint_background(int x0, int y0, int w, int h)
{
	for (int y = y0; y < y0 + h; y++) {
		if (y < 0 || (uint32_t)y >= H)
			continue;
		uint32_t *row = (uint32_t *)((uint8_t *)fb + (size_t)y * PITCH);
		for (int x = x0; x < x0 + w; x++)
			if (x >= 0 && (uint32_t)x < W)
				row[x] = background(x, y);
	}
}

/* A pseudo-glyph: a 6x9 bit pattern derived from the character code. */
static void glyph(int x0, int y0, unsigned ch, uint32_t fg)
{
	uint32_t s = ch * 2654435761u + 12345u;
	for (int gy = 0; gy < 9; gy++) {
		s = s * 1103515245u + 12345u;
		unsigned bits = (s >> 16) & 0x3f;
		if (gy == 0 || gy == 8)
			bits &= 0x1e; /* rounder top and bottom */
		for (int gx = 0; gx < 6; gx++)
			if (bits & (1u << gx))
				fill(x0 + gx, y0 + gy, 1, 1, fg);
	}
}

static void text(int x0, int y0, const char *s, uint32_t fg)
{
	for (int i = 0; s[i]; i++)
		if (s[i] != ' ')
			glyph(x0 + i * 8, y0, (unsigned char)s[i], fg);
}

/* A window with a title bar and some "text" lines; rect = w x h at x0, y0. */
static void window(int x0, int y0, int w, int h, const char *title)
{
	fill(x0, y0, w, h, 0x00202020);                  /* frame */
	fill(x0 + 1, y0 + 1, w - 2, 20, 0x002060c0);     /* title bar */
	text(x0 + 6, y0 + 6, title, 0x00ffffff);
	fill(x0 + 1, y0 + 22, w - 2, h - 23, 0x00f0f0e8); /* body */
	for (int l = 0; l < (h - 30) / 14; l++)
		text(x0 + 8, y0 + 28 + l * 14, "the quick brown fox jumps over", 0x00101010);
}

static void dirty(const struct drm_clip_rect *clips, unsigned n)
{
	struct drm_mode_fb_dirty_cmd d = { 0 };
	d.fb_id = fb_id;
	d.num_clips = n;
	d.clips_ptr = (uint64_t)(uintptr_t)clips;
	if (xioctl(DRM_IOCTL_MODE_DIRTYFB, &d) < 0 && errno != ENOSYS)
		die("DIRTYFB");
}

static struct drm_clip_rect clip(int x, int y, int w, int h)
{
	struct drm_clip_rect c;
	if (x < 0) { w += x; x = 0; }
	if (y < 0) { h += y; y = 0; }
	if (x + w > (int)W) w = (int)W - x;
	if (y + h > (int)H) h = (int)H - y;
	c.x1 = (unsigned short)x;
	c.y1 = (unsigned short)y;
	c.x2 = (unsigned short)(x + w);
	c.y2 = (unsigned short)(y + h);
	return c;
}

static uint64_t fnv1a_rgb(void)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (uint32_t y = 0; y < H; y++) {
		const uint32_t *row = (const uint32_t *)((const uint8_t *)fb + (size_t)y * PITCH);
		for (uint32_t x = 0; x < W; x++) {
			uint32_t p = row[x];
			uint8_t rgb[3] = { (uint8_t)(p >> 16), (uint8_t)(p >> 8), (uint8_t)p };
			for (int k = 0; k < 3; k++) {
				h ^= rgb[k];
				h *= 0x100000001b3ull;
			}
		}
	}
	return h;
}

static uint32_t create_dumb(uint32_t w, uint32_t h, uint32_t *pitch, uint64_t *size)
{
	struct drm_mode_create_dumb c = { 0 };
	c.width = w;
	c.height = h;
	c.bpp = 32;
	if (xioctl(DRM_IOCTL_MODE_CREATE_DUMB, &c) < 0)
		die("CREATE_DUMB");
	*pitch = c.pitch;
	*size = c.size;
	return c.handle;
}

static void *map_dumb(uint32_t handle, uint64_t size)
{
	struct drm_mode_map_dumb m = { 0 };
	m.handle = handle;
	if (xioctl(DRM_IOCTL_MODE_MAP_DUMB, &m) < 0)
		die("MAP_DUMB");
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)m.offset);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("qxl-kms-test: start\n");
	for (int i = 0; i < 200 && fd < 0; i++) {
		fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
		if (fd < 0)
			sleep_ms(50);
	}
	if (fd < 0)
		die("open /dev/dri/card0");
	printf("qxl-kms-test: opened /dev/dri/card0\n");

	uint32_t crtcs[MAX_IDS], conns[MAX_IDS], encs[MAX_IDS];
	struct drm_mode_card_res res = { 0 };
	if (xioctl(DRM_IOCTL_MODE_GETRESOURCES, &res) < 0)
		die("GETRESOURCES");
	if (res.count_crtcs > MAX_IDS || res.count_connectors > MAX_IDS ||
	    res.count_encoders > MAX_IDS || !res.count_crtcs || !res.count_connectors) {
		errno = ERANGE;
		die("resource counts");
	}
	res.count_fbs = 0;
	res.crtc_id_ptr = (uint64_t)(uintptr_t)crtcs;
	res.connector_id_ptr = (uint64_t)(uintptr_t)conns;
	res.encoder_id_ptr = (uint64_t)(uintptr_t)encs;
	if (xioctl(DRM_IOCTL_MODE_GETRESOURCES, &res) < 0)
		die("GETRESOURCES (ids)");

	/* First connected connector, its 1024x768 (or preferred) mode. */
	static struct drm_mode_modeinfo modes[MAX_MODES];
	struct drm_mode_get_connector conn;
	struct drm_mode_modeinfo mode;
	int found = 0;
	for (uint32_t i = 0; i < res.count_connectors && !found; i++) {
		memset(&conn, 0, sizeof conn);
		conn.connector_id = conns[i];
		if (xioctl(DRM_IOCTL_MODE_GETCONNECTOR, &conn) < 0)
			die("GETCONNECTOR");
		uint32_t n = conn.count_modes < MAX_MODES ? conn.count_modes : MAX_MODES;
		if (conn.connection != DRM_MODE_CONNECTED || n == 0)
			continue;
		uint32_t want = conn.count_modes;
		memset(&conn, 0, sizeof conn);
		conn.connector_id = conns[i];
		conn.count_modes = want < MAX_MODES ? want : MAX_MODES;
		conn.modes_ptr = (uint64_t)(uintptr_t)modes;
		if (xioctl(DRM_IOCTL_MODE_GETCONNECTOR, &conn) < 0)
			die("GETCONNECTOR (modes)");
		n = conn.count_modes < MAX_MODES ? conn.count_modes : MAX_MODES;
		int pick = -1;
		for (uint32_t m = 0; m < n; m++)
			if (modes[m].hdisplay == 1024 && modes[m].vdisplay == 768) {
				pick = (int)m;
				break;
			}
		for (uint32_t m = 0; m < n && pick < 0; m++)
			if (modes[m].type & DRM_MODE_TYPE_PREFERRED)
				pick = (int)m;
		if (pick < 0)
			pick = 0;
		mode = modes[pick];
		found = 1;
	}
	if (!found) {
		errno = ENODEV;
		die("no connected connector");
	}
	uint32_t crtc_id = crtcs[0];
	if (conn.encoder_id) {
		struct drm_mode_get_encoder e = { 0 };
		e.encoder_id = conn.encoder_id;
		if (xioctl(DRM_IOCTL_MODE_GETENCODER, &e) == 0 && e.crtc_id)
			crtc_id = e.crtc_id;
	}
	W = mode.hdisplay;
	H = mode.vdisplay;
	printf("qxl-kms-test: connector %u crtc %u mode %ux%u@%u (%u modes)\n", conn.connector_id,
	       crtc_id, W, H, mode.vrefresh, conn.count_modes);

	uint64_t size;
	uint32_t handle = create_dumb(W, H, &PITCH, &size);
	fb = map_dumb(handle, size);
	struct drm_mode_fb_cmd f = { 0 };
	f.width = W;
	f.height = H;
	f.pitch = PITCH;
	f.bpp = 32;
	f.depth = 24;
	f.handle = handle;
	if (xioctl(DRM_IOCTL_MODE_ADDFB, &f) < 0)
		die("ADDFB");
	fb_id = f.fb_id;

	/* Background first, then scan out. */
	paint_background(0, 0, (int)W, (int)H);
	struct drm_mode_crtc sc = { 0 };
	sc.set_connectors_ptr = (uint64_t)(uintptr_t)&conn.connector_id;
	sc.count_connectors = 1;
	sc.crtc_id = crtc_id;
	sc.fb_id = fb_id;
	sc.mode_valid = 1;
	sc.mode = mode;
	if (xioctl(DRM_IOCTL_MODE_SETCRTC, &sc) < 0)
		die("SETCRTC");
	struct drm_clip_rect full = clip(0, 0, (int)W, (int)H);
	dirty(&full, 1);
	printf("qxl-kms-test: mode set, background drawn\n");

	/* Panels: a task bar and a text panel (two clips in one call). */
	fill(0, (int)H - 32, (int)W, 32, 0x00303030);
	for (int i = 0; i < 6; i++)
		fill(8 + i * 120, (int)H - 26, 110, 20, 0x00505a70 + (uint32_t)i * 0x000a0a00);
	text(16, (int)H - 20, "start", 0x00ffffff);
	fill(40, 40, 420, 260, 0x00e8e8e8);
	for (int l = 0; l < 16; l++)
		text(48, 48 + l * 15, "lorem ipsum dolor sit amet, consectetur adipiscing", 0x00000000 + (uint32_t)(l * 0x000c0400));
	struct drm_clip_rect panels[2] = { clip(0, (int)H - 32, (int)W, 32), clip(40, 40, 420, 260) };
	dirty(panels, 2);
	printf("qxl-kms-test: panels drawn\n");

	/* Cursor: a 64x64 ARGB arrow with a soft shadow. */
	uint32_t cpitch;
	uint64_t csize;
	uint32_t chandle = create_dumb(64, 64, &cpitch, &csize);
	uint32_t *cur = map_dumb(chandle, csize);
	for (int y = 0; y < 64; y++)
		for (int x = 0; x < 64; x++) {
			uint32_t *p = (uint32_t *)((uint8_t *)cur + (size_t)y * cpitch) + x;
			if (x <= y / 2 + 1 && y < 48)
				*p = (x == 0 || x == y / 2 + 1 || y == 47) ? 0xff000000 : 0xffffffff;
			else if (x <= y / 2 + 4 && y < 52 && y > 3)
				*p = 0x40000000; /* shadow */
			else
				*p = 0;
		}
	struct drm_mode_cursor c = { 0 };
	c.flags = DRM_MODE_CURSOR_BO;
	c.crtc_id = crtc_id;
	c.width = 64;
	c.height = 64;
	c.handle = chandle;
	if (xioctl(DRM_IOCTL_MODE_CURSOR, &c) < 0)
		die("CURSOR (set)");
	printf("qxl-kms-test: cursor set\n");

	/* A window moved across the screen; damage = old and new position. */
	const int ww = 320, wh = 200;
	int px = -1, py = -1;
	for (int s = 0; s < STEPS; s++) {
		int x = 500 + s * (((int)W - 500 - ww) / STEPS);
		int y = 80 + s * (((int)H - 120 - wh) / STEPS);
		struct drm_clip_rect cl[2];
		unsigned n = 0;
		if (px >= 0) {
			paint_background(px, py, ww, wh);
			cl[n++] = clip(px, py, ww, wh);
		}
		window(x, y, ww, wh, "qxl window");
		cl[n++] = clip(x, y, ww, wh);
		dirty(cl, n);
		px = x;
		py = y;
		struct drm_mode_cursor m = { 0 };
		m.flags = DRM_MODE_CURSOR_MOVE;
		m.crtc_id = crtc_id;
		m.x = x + ww / 2;
		m.y = y + wh / 2;
		if (xioctl(DRM_IOCTL_MODE_CURSOR, &m) < 0)
			die("CURSOR (move)");
		printf("qxl-kms-test: step %d/%d window at %d,%d\n", s + 1, STEPS, x, y);
		sleep_ms(100);
	}
	printf("qxl-kms-test: frame %ux%u fnv1a64-rgb=%016llx\n", W, H,
	       (unsigned long long)fnv1a_rgb());
	printf("qxl-kms-test: done\n");
	/*
	 * Keep the DRM fd (and so our framebuffer on the CRTC) for argv[1]
	 * seconds: when the last fd closes, the kernel's fbdev client restores
	 * its own console framebuffer, and a SPICE client would see that instead.
	 */
	long hold = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
	if (hold > 0) {
		printf("qxl-kms-test: holding the frame for %ld s\n", hold);
		sleep_ms(hold * 1000);
	}
	return 0;
}
