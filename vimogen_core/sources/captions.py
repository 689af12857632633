"""The project's own captions for the built-in DeepMimic motion-capture clips: several short
motion descriptions and one detailed, video-style description per clip."""
from __future__ import annotations

CLIP_CAPTIONS: dict[str, dict] = {
    "walk": {
        "motion": [
            "a person walks forward at a relaxed pace.",
            "someone strolls straight ahead, arms swinging gently.",
            "a man takes several calm steps forward.",
        ],
        "video": "Full-body shot, steady camera. A person in a grey t-shirt walks forward across a flat "
                 "courtyard at an easy pace, heels striking first, arms swinging loosely in opposition "
                 "to the legs, torso upright and relaxed.",
    },
    "run": {
        "motion": [
            "a person runs forward quickly.",
            "someone jogs straight ahead with a steady stride.",
            "a runner sprints forward, pumping the arms.",
        ],
        "video": "Full-body shot, tracking camera. A person in running clothes runs forward along a track, "
                 "leaning slightly into the stride, knees driving up, elbows bent and pumping, both feet "
                 "briefly leaving the ground on every step.",
    },
    "jump": {
        "motion": [
            "a person jumps forward with both feet.",
            "someone crouches, swings the arms and leaps ahead.",
            "a person does a standing long jump and lands on two feet.",
        ],
        "video": "Full-body shot, side view. A person stands with feet together, bends the knees and swings "
                 "both arms back, then springs forward through the air, lands on both feet with knees bent "
                 "to absorb the impact and stands up again.",
    },
    "kick": {
        "motion": [
            "a person kicks forward with the right leg.",
            "someone throws a front kick and puts the foot back down.",
            "a fighter raises the right knee and snaps a kick ahead.",
        ],
        "video": "Full-body shot, stable camera. A person in a martial-arts stance shifts weight to the left "
                 "foot, lifts the right knee and extends the leg in a sharp kick in front of the body, then "
                 "pulls the leg back and returns to a balanced stance.",
    },
    "punch": {
        "motion": [
            "a person throws punches in front of the body.",
            "someone boxes, jabbing forward with the fists.",
            "a fighter punches the air several times.",
        ],
        "video": "Upper-body and legs in frame, stable camera. A person in a boxing stance, fists raised near "
                 "the chin, throws quick straight punches forward, rotating the shoulders into each strike and "
                 "pulling the fist back to guard.",
    },
    "spin": {
        "motion": [
            "a person spins around in place.",
            "someone turns a full circle on the spot.",
            "a person pivots and rotates their whole body around.",
        ],
        "video": "Full-body shot, fixed camera. A person standing in an empty studio turns on the spot, feet "
                 "stepping around while the body rotates through a full circle, arms held loosely at the "
                 "sides, ending facing the camera again.",
    },
    "spinkick": {
        "motion": [
            "a person spins and delivers a kick.",
            "someone does a spinning roundhouse kick.",
            "a fighter turns around and kicks high with one leg.",
        ],
        "video": "Full-body shot, stable camera. A martial artist pivots on the supporting foot, whips the body "
                 "around and swings the other leg in a high arcing kick at head height, then lands and "
                 "recovers a fighting stance.",
    },
    "backflip": {
        "motion": [
            "a person does a backflip.",
            "someone jumps up and flips backwards, landing on the feet.",
            "an acrobat performs a standing back somersault.",
        ],
        "video": "Full-body shot, side view. An acrobat stands on a gym floor, swings the arms and jumps "
                 "straight up, tucks the knees and rotates backwards through a full somersault in the air, "
                 "landing back on both feet with bent knees.",
    },
    "cartwheel": {
        "motion": [
            "a person does a cartwheel.",
            "someone turns sideways over the hands and lands on the feet.",
            "a gymnast places both hands on the ground and wheels the legs over.",
        ],
        "video": "Full-body shot, front view. A gymnast raises both arms, steps forward and places one hand "
                 "then the other on the mat while the legs swing over the head in a wide straddle, landing "
                 "one foot after the other and standing up with arms raised.",
    },
    "crawl": {
        "motion": [
            "a person crawls forward on hands and knees.",
            "someone moves ahead on all fours.",
            "a person crawls low along the ground.",
        ],
        "video": "Full-body shot, side view, low camera. A person on hands and knees crawls forward across a "
                 "carpeted floor, moving opposite hand and knee together, back kept flat and head looking "
                 "ahead.",
    },
    "roll": {
        "motion": [
            "a person does a forward roll on the ground.",
            "someone tucks and rolls over and stands back up.",
            "a person dives into a somersault along the floor.",
        ],
        "video": "Full-body shot, side view. A person crouches, tucks the chin, places the hands on a mat and "
                 "rolls forward over the back in a tight somersault, then comes up onto the feet and "
                 "stands.",
    },
    "dance_a": {
        "motion": [
            "a person dances energetically.",
            "someone performs a lively dance with arm waves.",
            "a dancer moves rhythmically, stepping and swinging the arms.",
        ],
        "video": "Full-body shot, fixed camera. A dancer in a bright studio moves to music, stepping side to "
                 "side, swaying the hips and sweeping both arms overhead and around in big expressive "
                 "motions.",
    },
    "dance_b": {
        "motion": [
            "a person performs a slow, flowing dance.",
            "someone dances, turning and raising the arms gracefully.",
            "a dancer sways and spins with smooth arm movements.",
        ],
        "video": "Full-body shot, fixed camera. A dancer performs a smooth routine on a wooden stage, shifting "
                 "weight between the feet, turning the torso and tracing slow arcs with both arms before "
                 "settling into a final pose.",
    },
    "getup_faceup": {
        "motion": [
            "a person lying on their back gets up.",
            "someone sits up from the floor and stands.",
            "a person rises from lying face up to standing.",
        ],
        "video": "Full-body shot, side view. A person lies flat on their back on a mat, sits up, pulls the "
                 "knees in, pushes off the floor with one hand and rises onto the feet until standing "
                 "upright.",
    },
    "getup_facedown": {
        "motion": [
            "a person lying face down gets up.",
            "someone pushes up from the floor onto their feet.",
            "a person rises from lying on the stomach to standing.",
        ],
        "video": "Full-body shot, side view. A person lies face down on the floor, places both hands under "
                 "the shoulders, pushes the chest up, brings the knees forward under the body and stands up "
                 "straight.",
    },
}
