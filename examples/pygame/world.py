"""The yard of the Tipped Lantern, a tavern in the Ashward of Aurelis, at dusk: where things stand, what
blocks the way, and how the people in it are drawn. Everything is plain shapes; the static parts are
painted once into one background surface, so a frame costs one blit plus the figures.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pygame

SIZE = WIDTH, HEIGHT = 960, 540
YARD_TOP = 132  # the tavern front and the inner wall end here; the cobbled yard starts
TAVERN_RIGHT = 560  # the tavern front ends here; beyond it, the inner wall and the sky
SPIRE_X = 612  # the Sunspire, seen over the inner wall
FOOT_RADIUS = 11  # a figure's footprint, for collisions
TALK_RANGE = 72  # how close the player must stand to talk to someone
WALK_SPEED = 150.0  # pixels per second

# Things that block the way, as rects on the ground.
OBSTACLES = [
    pygame.Rect(0, 0, WIDTH, YARD_TOP),  # the tavern front and the inner wall
    pygame.Rect(138, 300, 68, 52),  # the well
    pygame.Rect(436, 214, 112, 46),  # Orlando's table
    pygame.Rect(700, 322, 124, 52),  # Marta and Jory's table
    pygame.Rect(560, 136, 66, 40),  # barrels by the door
    pygame.Rect(40, 150, 70, 44),  # crates
    pygame.Rect(792, 448, 140, 64),  # Jory's cart
]
LANTERNS = [(118, 252), (640, 212), (600, 470)]
LETTER_SPOT = (262, 410)  # where a courier dropped the letter for Orlando, on the path from the gate


@dataclass(frozen=True)
class Palette:
    tunic: tuple[int, int, int]
    trim: tuple[int, int, int]
    hair: tuple[int, int, int]
    legs: tuple[int, int, int] = (52, 44, 40)
    skin: tuple[int, int, int] = (226, 184, 150)


PLAYER_LOOK = Palette(tunic=(44, 112, 118), trim=(30, 70, 76), hair=(70, 50, 36))
ORLANDO_LOOK = Palette(tunic=(48, 72, 156), trim=(226, 184, 72), hair=(96, 64, 40))
MARTA_LOOK = Palette(tunic=(108, 128, 94), trim=(84, 60, 48), hair=(196, 194, 188), skin=(206, 164, 130))
JORY_LOOK = Palette(tunic=(134, 92, 56), trim=(82, 60, 42), hair=(58, 44, 34), skin=(196, 150, 112))


class Actor:
    """Someone in the yard: a position (of the feet), a look, and which way they face."""

    def __init__(self, name: str, x: float, y: float, look: Palette, facing: float = 1.0):
        self.name = name
        self.pos = pygame.Vector2(x, y)
        self.look = look
        self.facing = facing  # -1 looks left, 1 looks right
        self.walking = False
        self._stride = 0.0  # walk-cycle phase

    def near(self, other: "Actor", distance: float = TALK_RANGE) -> bool:
        return self.pos.distance_to(other.pos) <= distance

    def face(self, x: float) -> None:
        if abs(x - self.pos.x) > 2:
            self.facing = 1.0 if x > self.pos.x else -1.0

    def step(self, direction: pygame.Vector2, dt: float, others: list["Actor"]) -> None:
        """Walk `direction` (any length; normalised here) for `dt` seconds, sliding along what blocks."""
        self.walking = direction.length_squared() > 0
        if not self.walking:
            return
        move = direction.normalize() * WALK_SPEED * dt
        if move.x:
            self.facing = 1.0 if move.x > 0 else -1.0
        # One axis at a time, so the player slides along a wall instead of sticking to it.
        for axis in (0, 1):
            before = self.pos[axis]
            self.pos[axis] += move[axis]
            if blocked(self.pos, others):
                self.pos[axis] = before
        self._stride += move.length() / 7.0

    def draw(self, surface: pygame.Surface, now: float) -> pygame.Rect:
        """Draw the figure standing on `pos`; returns the head's rect (speech bubbles point at it)."""
        x, y = round(self.pos.x), round(self.pos.y)
        look = self.look
        swing = math.sin(self._stride) * 3 if self.walking else 0.0
        bob = abs(math.sin(self._stride)) * 1.5 if self.walking else math.sin(now * 2.0 + x) * 0.6
        pygame.draw.ellipse(surface, (22, 20, 26), (x - 14, y - 5, 28, 10))
        top = y - 44 - round(bob)
        for side in (-1, 1):  # legs
            pygame.draw.rect(surface, look.legs, (x + side * 5 - 3 + round(side * swing), y - 14, 6, 13),
                             border_radius=2)
        body = pygame.Rect(x - 11, top + 15, 22, 22)
        pygame.draw.rect(surface, look.tunic, body, border_radius=6)
        pygame.draw.rect(surface, look.trim, (body.x, body.bottom - 5, body.width, 4), border_radius=2)
        for side in (-1, 1):  # arms
            pygame.draw.rect(surface, look.tunic,
                             (x + side * 12 - 3, top + 17 - round(side * swing * 0.5), 6, 15),
                             border_radius=3)
            pygame.draw.circle(surface, look.skin, (x + side * 12, top + 33 - round(side * swing * 0.5)), 3)
        head = (x, top + 9)
        pygame.draw.circle(surface, look.skin, head, 9)
        pygame.draw.ellipse(surface, look.hair, (x - 9, top - 1, 18, 9))
        pygame.draw.circle(surface, (30, 24, 24), (x + round(self.facing * 4), top + 10), 1)
        return pygame.Rect(x - 9, top, 18, 18)


def draw_letter(surface: pygame.Surface, pos: tuple[float, float], now: float) -> pygame.Rect:
    """The sealed letter lying on the cobbles, glinting now and then so the player notices it."""
    x, y = round(pos[0]), round(pos[1])
    pygame.draw.ellipse(surface, (22, 20, 26), (x - 12, y - 3, 24, 8))
    sheet = pygame.Rect(x - 10, y - 12, 20, 13)
    pygame.draw.rect(surface, (236, 224, 196), sheet, border_radius=2)
    pygame.draw.lines(surface, (170, 156, 130), False, [sheet.topleft, (x, y - 5), sheet.topright], 1)
    pygame.draw.circle(surface, (170, 40, 36), (x, y - 5), 3)  # the seal of Brightwater Hall
    if math.sin(now * 2.5) > 0.93:
        pygame.draw.line(surface, (255, 250, 220), (x + 8, y - 18), (x + 8, y - 12))
        pygame.draw.line(surface, (255, 250, 220), (x + 5, y - 15), (x + 11, y - 15))
    return sheet


def blocked(pos: pygame.Vector2, others: list[Actor]) -> bool:
    foot = pygame.Rect(round(pos.x) - FOOT_RADIUS, round(pos.y) - FOOT_RADIUS // 2,
                       FOOT_RADIUS * 2, FOOT_RADIUS)
    if not pygame.Rect(0, 0, WIDTH, HEIGHT).contains(foot) or foot.collidelist(OBSTACLES) >= 0:
        return True
    return any(pos.distance_to(o.pos) < FOOT_RADIUS * 2 for o in others)


def paint_background() -> pygame.Surface:
    """The static yard, painted once (seeded, so every run and every screenshot looks the same)."""
    rng = random.Random(487)
    bg = pygame.Surface(SIZE).convert()
    _cobbles(bg, rng)
    _sky_and_spire(bg, rng)
    _inner_wall(bg)
    _tavern(bg)
    _props(bg)
    _light_pools(bg)
    return bg


def _cobbles(bg: pygame.Surface, rng: random.Random) -> None:
    bg.fill((44, 40, 46))
    for row, y in enumerate(range(YARD_TOP - 6, HEIGHT + 12, 14)):
        x = -(row % 2) * 11
        while x < WIDTH:
            w = rng.randint(16, 24)
            shade = rng.randint(-9, 9)
            colour = (72 + shade, 68 + shade, 70 + shade + rng.randint(-3, 3))
            pygame.draw.rect(bg, colour, (x + 1, y + 1, w - 2, 12), border_radius=4)
            x += w
    # A worn dirt path from the gate to the door.
    path = pygame.Surface(SIZE, pygame.SRCALPHA)
    pygame.draw.lines(path, (96, 80, 60, 70), False, [(60, 540), (160, 440), (300, 300), (310, 150)], 46)
    bg.blit(path, (0, 0))


def _sky_and_spire(bg: pygame.Surface, rng: random.Random) -> None:
    sky = pygame.Rect(TAVERN_RIGHT, 0, WIDTH - TAVERN_RIGHT, 84)
    for y in range(sky.height):
        t = y / sky.height
        pygame.draw.line(bg, (int(34 + 60 * t), int(30 + 34 * t), int(70 + 20 * t)), (sky.x, y), (WIDTH, y))
    for _ in range(26):
        bg.set_at((rng.randint(sky.x, WIDTH - 1), rng.randint(0, 44)), (236, 232, 210))
    # The Sunspire, far off above the inner wall, with its gilded crown catching the last light.
    x = SPIRE_X
    pygame.draw.polygon(bg, (58, 52, 78), [(x - 14, 84), (x - 4, 20), (x, 6), (x + 4, 20), (x + 14, 84)])
    pygame.draw.polygon(bg, (244, 196, 92), [(x - 4, 20), (x, 6), (x + 4, 20)])
    pygame.draw.rect(bg, (58, 52, 78), (x - 30, 56, 60, 28))
    pygame.draw.circle(bg, (250, 210, 120), (x, 32), 3)


def _inner_wall(bg: pygame.Surface) -> None:
    wall = pygame.Rect(TAVERN_RIGHT, 70, WIDTH - TAVERN_RIGHT, YARD_TOP - 70)
    pygame.draw.rect(bg, (92, 86, 96), wall)
    for x in range(wall.x, WIDTH, 24):
        pygame.draw.rect(bg, (92, 86, 96), (x, 60, 14, 12))
    for row, y in enumerate(range(wall.y + 4, wall.bottom, 12)):
        for x in range(wall.x + (row % 2) * 14, WIDTH, 28):
            pygame.draw.line(bg, (74, 68, 80), (x, y), (x, y + 10))
        pygame.draw.line(bg, (74, 68, 80), (wall.x, y + 11), (WIDTH, y + 11))
    pygame.draw.rect(bg, (60, 56, 64), (wall.x, wall.bottom - 6, wall.width, 6))


def _tavern(bg: pygame.Surface) -> None:
    pygame.draw.rect(bg, (104, 52, 44), (0, 0, TAVERN_RIGHT, 42))  # roof
    for x in range(0, TAVERN_RIGHT, 20):
        pygame.draw.line(bg, (84, 40, 34), (x, 0), (x, 42))
    pygame.draw.rect(bg, (70, 34, 30), (0, 38, TAVERN_RIGHT, 6))
    front = pygame.Rect(0, 44, TAVERN_RIGHT, YARD_TOP - 44)
    pygame.draw.rect(bg, (196, 178, 146), front)  # plaster
    for x in range(0, TAVERN_RIGHT + 1, 56):  # timber frame
        pygame.draw.rect(bg, (76, 52, 36), (x - 4, front.y, 8, front.height))
    pygame.draw.rect(bg, (76, 52, 36), (0, front.y, TAVERN_RIGHT, 7))
    pygame.draw.rect(bg, (76, 52, 36), (0, front.bottom - 8, TAVERN_RIGHT, 8))
    for x in (80, 204, 452):  # windows lit from inside
        pygame.draw.rect(bg, (60, 40, 28), (x - 3, 63, 58, 40), border_radius=3)
        pygame.draw.rect(bg, (250, 196, 102), (x, 66, 52, 34), border_radius=2)
        pygame.draw.line(bg, (92, 62, 40), (x + 26, 66), (x + 26, 99), 3)
        pygame.draw.line(bg, (92, 62, 40), (x, 83), (x + 51, 83), 3)
    pygame.draw.rect(bg, (62, 40, 28), (284, 58, 56, 74),  # the door and its frame
                     border_top_left_radius=22, border_top_right_radius=22)
    pygame.draw.rect(bg, (92, 60, 38), (290, 64, 44, 68),
                     border_top_left_radius=18, border_top_right_radius=18)
    pygame.draw.circle(bg, (210, 170, 80), (326, 100), 3)
    # The sign: a lantern hanging askew from a bracket.
    pygame.draw.line(bg, (40, 30, 24), (360, 60), (404, 60), 4)
    pygame.draw.line(bg, (40, 30, 24), (398, 60), (404, 72), 2)
    lantern = [(396, 72), (414, 78), (410, 100), (390, 94)]
    pygame.draw.polygon(bg, (252, 204, 110), lantern)
    pygame.draw.polygon(bg, (60, 42, 30), lantern, 3)


def _props(bg: pygame.Surface) -> None:
    # The well.
    pygame.draw.ellipse(bg, (30, 28, 34), (130, 326, 84, 34))
    pygame.draw.ellipse(bg, (120, 112, 118), (136, 300, 72, 52))
    pygame.draw.ellipse(bg, (24, 30, 44), (148, 310, 48, 30))
    pygame.draw.line(bg, (70, 50, 36), (140, 326), (140, 280), 5)
    pygame.draw.line(bg, (70, 50, 36), (204, 326), (204, 280), 5)
    pygame.draw.line(bg, (90, 64, 44), (134, 282), (210, 282), 6)
    for rect in (pygame.Rect(436, 214, 112, 46), pygame.Rect(700, 322, 124, 52)):  # tables
        pygame.draw.rect(bg, (30, 26, 30), rect.move(4, 8), border_radius=6)
        pygame.draw.rect(bg, (128, 88, 56), rect, border_radius=6)
        pygame.draw.rect(bg, (102, 68, 42), rect, 3, border_radius=6)
        for i in range(1, 4):
            x = rect.x + rect.width * i // 4
            pygame.draw.line(bg, (110, 74, 46), (x, rect.y + 4), (x, rect.bottom - 4))
    for x, y in ((470, 232), (736, 342), (790, 346)):  # cups of cider
        pygame.draw.circle(bg, (200, 170, 110), (x, y), 6)
        pygame.draw.circle(bg, (236, 188, 90), (x, y), 4)
    pygame.draw.circle(bg, (186, 80, 60), (512, 240), 7)  # an apple on Orlando's table
    for x, y in ((576, 156), (608, 150)):  # barrels
        pygame.draw.ellipse(bg, (30, 26, 30), (x - 18, y + 6, 38, 16))
        pygame.draw.ellipse(bg, (122, 82, 50), (x - 16, y - 16, 34, 34))
        pygame.draw.ellipse(bg, (62, 60, 64), (x - 16, y - 16, 34, 34), 3)
    for x, y in ((44, 152), (76, 164)):  # crates
        pygame.draw.rect(bg, (140, 104, 62), (x, y, 32, 28))
        pygame.draw.rect(bg, (96, 68, 40), (x, y, 32, 28), 3)
        pygame.draw.line(bg, (96, 68, 40), (x, y), (x + 31, y + 27), 3)
    # Jory's cart: bed, shafts and two wheels.
    pygame.draw.rect(bg, (30, 26, 30), (796, 470, 140, 40), border_radius=4)
    pygame.draw.rect(bg, (118, 84, 52), (792, 452, 136, 44), border_radius=4)
    for i in range(1, 6):
        pygame.draw.line(bg, (96, 66, 40), (792 + i * 22, 454), (792 + i * 22, 494), 2)
    pygame.draw.line(bg, (96, 66, 40), (792, 468), (744, 486), 5)
    pygame.draw.line(bg, (96, 66, 40), (792, 486), (744, 504), 5)
    for x in (808, 912):
        pygame.draw.circle(bg, (60, 44, 30), (x, 500), 18, 5)
        pygame.draw.line(bg, (60, 44, 30), (x - 14, 500), (x + 14, 500), 2)
        pygame.draw.line(bg, (60, 44, 30), (x, 486), (x, 514), 2)
    for x, y in LANTERNS:  # lantern posts
        pygame.draw.line(bg, (34, 30, 30), (x, y), (x, y - 52), 4)
        pygame.draw.rect(bg, (250, 206, 116), (x - 6, y - 64, 12, 14), border_radius=3)
        pygame.draw.rect(bg, (40, 34, 30), (x - 6, y - 64, 12, 14), 2, border_radius=3)


def _light_pools(bg: pygame.Surface) -> None:
    """Warm light from the lanterns and windows, added onto the dusk-dark yard."""
    dusk = pygame.Surface(SIZE)
    dusk.fill((200, 196, 220))
    bg.blit(dusk, (0, 0), special_flags=pygame.BLEND_RGB_MULT)
    glow = _glow(120, (70, 48, 18))
    for x, y in LANTERNS:
        bg.blit(glow, (x - 120, y - 120 - 40), special_flags=pygame.BLEND_RGB_ADD)
    window_glow = _glow(80, (46, 32, 12))
    for x in (106, 230, 478, 312):
        bg.blit(window_glow, (x - 80, YARD_TOP - 70), special_flags=pygame.BLEND_RGB_ADD)


def _glow(radius: int, colour: tuple[int, int, int]) -> pygame.Surface:
    surface = pygame.Surface((radius * 2, radius * 2))
    for r in range(radius, 0, -4):
        k = (1 - r / radius) ** 1.6
        pygame.draw.circle(surface, tuple(int(c * k) for c in colour), (radius, radius), r)
    return surface
